"""Atomic JSON files, and the hook the crash tests use to stop a conversion at a stage.

``stage(name)`` marks a point of a conversion where a crash leaves a distinct state on
disk. It costs one dictionary lookup unless a test asks for it through the environment:
``RECORDFORGE_STAGE_LOG=<file>`` appends ``<n> <name>`` for every stage reached, and
``RECORDFORGE_KILL_AT=<n>`` kills the process with ``SIGKILL`` at the n-th stage (1-based),
so a test can kill a real conversion at every stage it goes through, then rerun it.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import threading
from pathlib import Path
from typing import Any

__all__ = [
    "append_line",
    "fsync",
    "named",
    "stage",
    "write_bytes_atomic",
    "write_json_atomic",
]

_reached = 0


_stage_lock = threading.Lock()


def stage(name: str) -> None:
    """A kill point of the crash tests (see the module docstring); with
    ``RECORDFORGE_SIGNAL`` set (``INT``, ``TERM``...) the n-th stage sends that signal
    instead of SIGKILL (the tests of Ctrl-C, without a race against the conversion)."""
    log, kill_at = os.environ.get("RECORDFORGE_STAGE_LOG"), os.environ.get("RECORDFORGE_KILL_AT")
    if log is None and kill_at is None:
        return
    global _reached
    with _stage_lock:  # stages reached by threads (remote moves) are counted once each
        _reached += 1
        reached = _reached
        if log is not None:
            with open(log, "a", encoding="utf-8") as f:
                f.write(f"{reached} {name}\n")
    if kill_at is not None and int(kill_at) == reached:
        sent = os.environ.get("RECORDFORGE_SIGNAL")
        os.kill(os.getpid(), getattr(signal, f"SIG{sent}") if sent else signal.SIGKILL)


def named(error: OSError, path: Path) -> OSError:
    """``error`` with the file it is about, when it names none (a full disk's ENOSPC)."""
    if error.filename is None and error.errno is not None:
        return type(error)(error.errno, error.strerror, str(path))
    return error


def fsync(path: Path) -> None:
    """Makes a written file durable before a journal or a rename refers to it."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        os.fsync(fd)
    except OSError as e:
        raise named(e, path) from None
    finally:
        os.close(fd)


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    """Writes ``data`` to a temporary file beside ``path`` (created with the umask's
    permissions, as ``open`` would; never through a link), fsyncs it, then renames it
    over ``path`` (which replaces a link there rather than following it)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        stage(f"{path.name} written under a temporary name")
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise named(e, path) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def append_line(path: Path, data: bytes) -> None:
    """Appends one line to ``path`` and fsyncs it (never through a link)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
        try:
            view = memoryview(data + b"\n")
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        raise named(e, path) from None


def write_json_atomic(path: Path, data: Any) -> Path:
    """``data`` as indented JSON, written by :func:`write_bytes_atomic`."""
    text = json.dumps(data, indent=2, sort_keys=False) + "\n"
    return write_bytes_atomic(path, text.encode("utf-8"))
