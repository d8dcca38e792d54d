"""Helpers shared by the test modules: value comparison, protobuf wire builders for
hand-made records, and the loader of the fuzz targets."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import struct
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

FUZZ_DIR = Path(__file__).resolve().parent.parent / "fuzz"
U64_MAX = (1 << 64) - 1


def assert_value_equal(got: object, expected: object) -> None:
    """A decoded feature value equals the expected one, dtype included for arrays."""
    if isinstance(expected, np.ndarray):
        assert isinstance(got, np.ndarray)
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)
    else:
        assert got == expected


def same_json(a: Any, b: Any) -> bool:
    """Parsed JSON values equal and of the same types all the way down (``1`` is not
    ``1.0``, ``True`` not ``1``); floats bit for bit (``-0.0`` is not ``0.0``); dicts in
    the same key order."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same_json(a[k], b[k]) for k in a)
    return bool(a == b)


def assert_read_json_as_json_loads(raw: bytes, path: Path) -> None:
    """``_read_json`` of a file holding ``raw`` gives what ``json.loads(raw)`` gives: its
    value (a JSON object), or a SchemaError where it raises ValueError (or its own
    RecursionError) or is not an object."""
    import json

    import pytest

    import recordforge as rf
    from recordforge.sources._coco_index import _read_json

    path.write_bytes(raw)
    try:
        expected: Any = json.loads(raw)
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError
        with pytest.raises(rf.SchemaError if not isinstance(e, RecursionError) else RecursionError):
            _read_json(path)
        return
    if isinstance(expected, dict):
        assert same_json(dict(_read_json(path)), expected)
    else:
        with pytest.raises(rf.SchemaError, match="expected a JSON object"):
            _read_json(path)


def run_python(code: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``code`` (dedented) in a fresh interpreter, so that a crash cannot take the suite
    down."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# --------------------------------------------------------------------------------------
# Protobuf wire format, by hand: records no encoder would write


def varint(v: int) -> bytes:
    """``v`` as a base-128 varint; a negative ``v`` as its 64-bit two's complement."""
    out = bytearray()
    v &= U64_MAX
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def tag(field: int, wire_type: int) -> bytes:
    return varint((field << 3) | wire_type)


def ld(field: int, payload: bytes) -> bytes:
    """A length-delimited field."""
    return tag(field, 2) + varint(len(payload)) + payload


def entry(key: bytes, feature: bytes) -> bytes:
    """One entry of the ``Features`` map: the key and a serialized ``Feature``."""
    return ld(1, ld(1, key) + ld(2, feature))


def example(*entries: bytes) -> bytes:
    """An Example whose Features message holds ``entries`` (serialized map entries)."""
    return ld(1, b"".join(entries))


# --------------------------------------------------------------------------------------
# The fuzz targets in fuzz/, imported without atheris


def load_fuzz_target(name: str) -> ModuleType:
    """The module ``fuzz/<name>.py``, loaded once (with ``fuzz/`` on ``sys.path``, where
    the targets find the code they share)."""
    if name in sys.modules:
        return sys.modules[name]
    if str(FUZZ_DIR) not in sys.path:
        sys.path.insert(0, str(FUZZ_DIR))
    spec = importlib.util.spec_from_file_location(name, FUZZ_DIR / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def moto_s3(
    bucket: str, front: Callable[[tuple[str, int]], tuple[str, int]] | None = None
) -> Iterator[Any]:
    """A moto S3 server on a free loopback port (offline) with ``bucket`` made, and s3fs
    pointed at it by environment variables (so every s3fs instance, in any thread, finds
    it); ``front`` maps the server's address to the one clients use (a proxy). Yields
    an s3fs file system."""
    import pytest
    import s3fs  # type: ignore[import-untyped]
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = front(server.get_host_and_port()) if front else server.get_host_and_port()
    patch = pytest.MonkeyPatch()
    patch.setenv("AWS_ACCESS_KEY_ID", "testing")
    patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    patch.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
    patch.delenv("AWS_PROFILE", raising=False)
    # No region in client_kwargs: with one, moto refuses the bucket's creation.
    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem(anon=False)
    # moto's servers in one process share their state: a module reusing another's
    # fixtures finds the bucket made (each test writes under its own prefix).
    if not fs.exists(bucket):
        fs.mkdir(bucket)
    try:
        yield fs
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        patch.undo()
        server.stop()


@contextlib.contextmanager
def moto_server_process() -> Iterator[dict[str, str]]:
    """A moto S3 server in a process of its own on a free loopback port (one in this
    process would be a thread, and a thread makes workers spawn); yields the environment
    variables that point s3fs at it."""
    import socket
    import time

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            assert time.monotonic() < deadline and server.poll() is None, "no moto server"
            time.sleep(0.1)
        yield {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        }
    finally:
        server.kill()
        server.wait()


def count_record_files(monkeypatch: Any) -> list[str]:
    """Counts the files recordforge maps: every ``_core.RecordFile`` made from now on
    (``monkeypatch``: pytest's fixture) appends its path to the returned list."""
    from recordforge import _core

    opened: list[str] = []
    real = _core.RecordFile

    def counting(path: Any, **kwargs: Any) -> Any:
        opened.append(str(path))
        return real(path, **kwargs)

    monkeypatch.setattr(_core, "RecordFile", counting)
    return opened


def record_chunk_sizes(monkeypatch: Any) -> list[tuple[int | None, int]]:
    """Records every chunk size the parallel writer picks from now on
    (``_SplitRun.chunk_size``), with the items not yet given out when it picked it."""
    from recordforge import _parallel

    sizes: list[tuple[int | None, int]] = []
    real = _parallel._SplitRun.chunk_size

    def chunk_size(self: Any) -> int:
        size = real(self)
        sizes.append((self.unassigned, size))
        return size

    monkeypatch.setattr(_parallel._SplitRun, "chunk_size", chunk_size)
    return sizes


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without recordforge's test hooks (kill points, stage logs), with
    this process's import path: for a child process running the command."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RECORDFORGE_")}
    return {**environ, "PYTHONPATH": os.pathsep.join(sys.path), **extra}


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``recordforge ARGS`` in a child process (``python -m recordforge``)."""
    return subprocess.run(
        [sys.executable, "-m", "recordforge", *args],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def peak_rss(
    command: list[str], timeout: float = 120, address_space: int | None = None
) -> tuple[int, int, str]:
    """Runs ``command`` as the only child of a fresh interpreter (its address space
    capped at ``address_space`` bytes, when given), which reports the child's peak RSS
    (``RUSAGE_CHILDREN``) in bytes, with the child's exit status and stderr."""
    wrapper = (
        "import json, resource, subprocess, sys\n"
        "cap = int(sys.argv[1])\n"
        "limit = (lambda: resource.setrlimit(resource.RLIMIT_AS, (cap, cap))) if cap else None\n"
        "r = subprocess.run(sys.argv[2:], capture_output=True, text=True, preexec_fn=limit)\n"
        "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024\n"
        "print(json.dumps([rss, r.returncode, r.stderr]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", wrapper, str(address_space or 0), *command],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    rss, code, stderr = json.loads(result.stdout)
    return rss, code, stderr


def run_file(
    script: Path, *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """The Python file ``script`` with ``args`` in a fresh interpreter, in ``env``."""
    return subprocess.run(
        [sys.executable, str(script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_code(
    code: str,
    *args: str,
    timeout: float = 60,
    flags: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``code`` (dedented) in a fresh interpreter started with ``flags``, with ``args``,
    in ``env`` (by default :func:`clean_env`)."""
    return subprocess.run(
        [sys.executable, *flags, "-c", textwrap.dedent(code), *args],
        env=env or clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ok_lines(p: subprocess.CompletedProcess[str]) -> list[str]:
    """The output lines of a child that must have exited normally."""
    assert p.returncode == 0, f"exit {p.returncode}: {p.stdout[-300:]} {p.stderr[-800:]}"
    return p.stdout.splitlines()


def held_records(monkeypatch: Any) -> dict[str, dict[int, int]]:
    """The records each worker holds, converted and not yet written (a chunk's frames
    from its results until its "place" task is done), as the parent sees them: the most
    bytes and the most chunks per worker (``monkeypatch``: pytest's, which undoes it)."""
    from recordforge import _parallel, _workers
    from recordforge.sharding import FRAME_OVERHEAD

    held: dict[int, tuple[int, int]] = {}  # chunk number -> (worker, bytes)
    peak: dict[str, dict[int, int]] = {"bytes": {}, "chunks": {}}
    converted = _parallel._SplitRun._converted

    def counting(self: Any, chunk: Any, results: Any) -> None:
        frames = sum(len(r[0]) * FRAME_OVERHEAD + int(r[0].sum()) for r in results[0])
        held[chunk.number] = (chunk.worker, frames)
        converted(self, chunk, results)
        for k in range(self.workers):
            mine = [b for w, b in held.values() if w == k]
            peak["bytes"][k] = max(peak["bytes"].get(k, 0), sum(mine))
            peak["chunks"][k] = max(peak["chunks"].get(k, 0), len(mine))

    send = _workers.Workers.send

    def sending(self: Any, worker: Any, name: str, args: Any, what: str, done: Any) -> None:
        if name == "place":
            number = args[0]

            def placed(result: Any, done: Callable[[Any], None] = done) -> None:
                held.pop(number, None)
                done(result)

            return send(self, worker, name, args, what, placed)
        return send(self, worker, name, args, what, done)

    monkeypatch.setattr(_parallel._SplitRun, "_converted", counting)
    monkeypatch.setattr(_workers.Workers, "send", sending)
    return peak


def run_script(
    script: Path, out: Path, workers: int, **env: str
) -> subprocess.CompletedProcess[str]:
    """``python script out workers`` in a fresh process, without the caller's
    ``RECORDFORGE_*`` variables, with ``env`` added (the crash tests' stage hooks)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RECORDFORGE_")}
    return subprocess.run(
        [sys.executable, str(script), str(out), str(workers)],
        env={**environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
