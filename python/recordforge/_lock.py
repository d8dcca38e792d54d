"""The lock of an output directory: an ``flock`` on ``.recordforge.lock``, which holds
the holder's pid, host and a fingerprint of its command. The kernel releases an flock
when its holder dies, so a lock file whose flock is free is stale and is taken over (with
a :class:`~recordforge.RecordforgeWarning`); a lock file naming another host is not:
recordforge cannot tell whether that process runs. The states it guards are described in
:mod:`recordforge._outdir`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import stat
import time
import warnings
from pathlib import Path
from typing import Any

from recordforge._atomic import stage
from recordforge.errors import DirectoryLockedError, RecordforgeWarning

__all__ = ["LOCK_NAME", "Lock", "live_holder"]

LOCK_NAME = ".recordforge.lock"
# Attempts, 50 ms apart, to take a lock that a reader may hold for a moment.
_LOCK_TRIES = 20


def _holder_text(holder: dict[str, Any]) -> str:
    return f"pid {holder.get('pid')} on host {holder.get('host')}"


def _read_holder(fd: int) -> dict[str, Any] | None:
    os.lseek(fd, 0, os.SEEK_SET)
    data = os.read(fd, 64 * 1024)
    if not data.strip():
        return None
    try:
        holder = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {"pid": "?", "host": "?"}
    return holder if isinstance(holder, dict) else {"pid": "?", "host": "?"}


def live_holder(path: Path) -> str | None:
    """``"pid N on host H"`` when a process holds the flock of the lock file ``path``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            return _holder_text(holder) if holder else "another process"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


class Lock:
    """The flock on ``.recordforge.lock``, with the holder's pid, host and fingerprint."""

    def __init__(self, directory: Path, digest: str) -> None:
        self.path = directory / LOCK_NAME
        self.digest = digest
        self.fd: int | None = None
        # What the lock file said when it was taken over from a dead process.
        self.stale: dict[str, Any] | None = None

    def acquire(self) -> None:
        tries = 0
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
            except OSError as e:
                raise DirectoryLockedError(
                    f"{self.path}: cannot be opened as recordforge's lock file ({e.strerror}); "
                    "it must be a regular file (not a link)"
                ) from None
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise DirectoryLockedError(f"{self.path}: is not a regular file")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                tries += 1
                if tries < _LOCK_TRIES:
                    # A reader asking whether a conversion runs holds the lock a moment.
                    time.sleep(0.05)
                    continue
                raise DirectoryLockedError(
                    f"{self.path.parent}: another conversion is writing into it "
                    f"({_holder_text(holder) if holder else 'another process'}); wait for it "
                    "to finish or stop it"
                ) from None
            # The previous holder may have removed the file between our open and flock.
            try:
                current = os.stat(self.path)
            except FileNotFoundError:
                current = None
            mine = os.fstat(fd)
            if current is not None and (current.st_dev, current.st_ino) == (
                mine.st_dev,
                mine.st_ino,
            ):
                break
            os.close(fd)
        previous = _read_holder(fd)
        host = socket.gethostname()
        if previous is not None and previous.get("host") not in (host, "?"):
            os.close(fd)
            raise DirectoryLockedError(
                f"{self.path.parent}: locked by {_holder_text(previous)}, another machine; "
                f"recordforge cannot tell whether it still runs. If it does not, remove "
                f"{self.path} and rerun"
            )
        if previous is not None:
            self.stale = previous
            warnings.warn(
                f"{self.path.parent}: took over the lock left by {_holder_text(previous)}, "
                "which is no longer running",
                RecordforgeWarning,
                stacklevel=4,
            )
        self.fd = fd
        self.write(finished=False)
        stage("lock taken")

    def write(self, *, finished: bool) -> None:
        """The holder, in the lock file; ``finished`` once ``dataset.json`` is written
        (a lock left after that by a kill belongs to a complete run of the command)."""
        assert self.fd is not None
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "fingerprint": self.digest,
            "finished": finished,
        }
        data = json.dumps(holder).encode() + b"\n"
        os.pwrite(self.fd, data, 0)
        os.ftruncate(self.fd, len(data))

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self.fd)
        self.fd = None
