"""Adversarial review of 30bcea7 (``scan_records`` unmapped a mapped file on a thread of
its own, ``mapped::drop_later``: reverted for the hang and the kept files these tests
found), 77e0b43 (CSV / JSON Lines parts and the inference's
first blocks read fully through file objects that give short reads, ``_fs.read_fully``)
and 6d6cbd2 (``rows_agree``, ``apart``, the spawn worker's collector).

The invariants: a scan never hangs, leaks or faults, whatever forks, threads, exits or
cuts the file around it; a table read through short reads converts every row, with one
worker or two; a table of no rows is a dataset of 0 records or a clear error, never a
traceback."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import multiprocessing
import os
import re
import sys
import threading
from pathlib import Path
from typing import Any, ClassVar

import pytest
from helpers import cli, ok_lines, run_code

import recordforge as rf
from recordforge import _fs
from recordforge.sources.table import TableSource

TIMEOUT = 25


def _file(path: Path, records: int = 50, size: int = 20_000) -> Path:
    with rf.TFRecordWriter(path) as w:
        w.write_many([bytes([i % 251]) * size for i in range(records)])
    return path


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _maps_under(folder: Path) -> int:
    with open("/proc/self/maps") as f:
        return sum(1 for line in f if str(folder) in line)


# -- 30bcea7 (reverted): scans around forks, threads, exits and cuts ---------------------


_FORK_DURING_FIRST_CALL = """
import os, sys, threading, time, signal
import recordforge as rf
path, mode = sys.argv[1], sys.argv[2]
if mode == "unmap":
    # (the writer's CRCs: crc_fast's own lazy set-up done before any fork, so that
    # only drop_later's is left to race)
    with rf.TFRecordWriter(path) as w:
        w.write_many([b"x" * 1000] * 5)
    rf.crc32c(b"abc")
# ("crc": a gzip file, read as a stream, never mapped: no drop_later; the same window
# in crc_fast's lazy set-up, before these commits, hangs a child too, but is too narrow
# to hit within a test's time)
call = lambda: rf.scan_records(path)  # noqa: E731
deadline = time.monotonic() + 6  # (15 s found them; 6 s a CI run can afford)
tries = hung = 0
while time.monotonic() < deadline and not hung:
    tries += 1
    child = os.fork()
    if child == 0:
        # A fresh child whose lazy state is not set up yet: a thread's first call sets
        # it up while this thread forks.
        t = threading.Thread(target=call)
        t.start()
        end = time.perf_counter() + (tries % 40) * 5e-6
        while time.perf_counter() < end:
            pass
        grandchild = os.fork()
        if grandchild == 0:
            signal.alarm(1)  # (default action: killed, a hang in Rust cannot hide it)
            call()
            os._exit(0)
        t.join()
        _, status = os.waitpid(grandchild, 0)
        os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
    _, status = os.waitpid(child, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        hung = code
print(tries, hung)
"""


def test_a_fork_while_the_first_scan_starts_the_thread_never_hangs_the_child(
    tmp_path: Path,
) -> None:
    args = (str(tmp_path / "r.tfrecord"), "unmap")
    p = run_code(_FORK_DURING_FIRST_CALL, *args, timeout=TIMEOUT)
    tries, hung = (int(x) for x in ok_lines(p)[-1].split())
    assert hung == 0, f"a grandchild's scan hung (exit {hung}) after {tries} tries"


def test_many_python_threads_scan_at_once(tmp_path: Path) -> None:
    files = [_file(tmp_path / f"t{i}.tfrecord", records=20, size=5000) for i in range(8)]
    rf.scan_records(files[0])
    fds = _fds()
    errors: list[BaseException] = []
    counts: list[int] = []

    def work(k: int) -> None:
        try:
            for j in range(150):
                counts.append(rf.scan_records(files[(k + j) % len(files)]).records)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert not any(t.is_alive() for t in threads), "a scanning thread hung"
    assert not errors
    assert counts == [20] * (16 * 150)
    rf.scan_records(files[0])  # (whatever waited is dropped by now, or is this one)
    assert _fds() <= fds + 2
    assert _maps_under(tmp_path) <= 2


def test_thousands_of_scans_leave_fds_and_maps_bounded(tmp_path: Path) -> None:
    files = [_file(tmp_path / f"m{i}.tfrecord", records=4, size=3000) for i in range(10)]
    rf.scan_records(files[0])
    fds = _fds()
    for j in range(3000):
        assert rf.scan_records(files[j % 10]).records == 4
    assert _fds() <= fds + 2
    assert _maps_under(tmp_path) <= 2


_CHILD_LEAKS = """
import os, sys
import recordforge as rf
folder = sys.argv[1]
files = [os.path.join(folder, n) for n in sorted(os.listdir(folder))]
rf.scan_records(files[0])  # the parent's thread exists before the fork
child = os.fork()
if child == 0:
    fds = len(os.listdir("/proc/self/fd"))
    for j in range(2000):
        assert rf.scan_records(files[j % len(files)]).records == 4
    maps = sum(1 for line in open("/proc/self/maps") if folder in line)
    # A child drops its maps at once: none left, not one fd more.
    os._exit(0 if len(os.listdir("/proc/self/fd")) <= fds and maps == 0 else 3)
_, status = os.waitpid(child, 0)
print("child", os.waitstatus_to_exitcode(status))
"""


def test_a_forked_child_of_thousands_of_scans_leaks_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "files"
    folder.mkdir()
    for i in range(6):
        _file(folder / f"c{i}.tfrecord", records=4, size=3000)
    assert ok_lines(run_code(_CHILD_LEAKS, str(folder), timeout=TIMEOUT))[-1] == "child 0"


_FORK_RIGHT_AFTER = """
import os, sys
import recordforge as rf
path = sys.argv[1]
codes = []
for i in range(40):
    assert rf.scan_records(path).records == 50  # its map may still wait on the thread
    child = os.fork()
    if child == 0:
        ok = all(rf.scan_records(path).records == 50 for _ in range(5))
        grandchild = os.fork()
        if grandchild == 0:
            os._exit(0 if rf.scan_records(path).records == 50 else 4)
        _, status = os.waitpid(grandchild, 0)
        os._exit(0 if ok and os.waitstatus_to_exitcode(status) == 0 else 5)
    _, status = os.waitpid(child, 0)
    codes.append(os.waitstatus_to_exitcode(status))
fds = len(os.listdir("/proc/self/fd"))
for _ in range(200):
    rf.scan_records(path)
print(sorted(set(codes)), len(os.listdir("/proc/self/fd")) - fds <= 2)
"""


def test_os_fork_right_after_a_scan(tmp_path: Path) -> None:
    path = _file(tmp_path / "f.tfrecord")
    assert ok_lines(run_code(_FORK_RIGHT_AFTER, str(path), timeout=TIMEOUT))[-1] == "[0] True"


_CHILD_INHERITS = """
import os, sys
import recordforge as rf
folder = sys.argv[1]
import time
held = tries = 0
deadline = time.monotonic() + 6  # (15 s found them; 6 s a CI run can afford)
while not held and tries < 400 and time.monotonic() < deadline:
    tries += 1
    paths = []
    for k in range(2):
        path = os.path.join(folder, f"b{tries}-{k}.tfrecord")
        with rf.TFRecordWriter(path) as w:
            w.write_many([b"y" * 200_000] * 50)
        assert rf.scan_records(path).records == 50
        os.unlink(path)  # the caller is done with the file
        paths.append(path)
    child = os.fork()
    if child == 0:
        time.sleep(0.2)  # (no thread here to drop what was copied)
        links = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                links.append(os.readlink(f"/proc/self/fd/{fd}"))
            except OSError:  # (listdir's own)
                pass
        maps = sum(1 for line in open("/proc/self/maps") if folder in line)
        os._exit(10 + sum(1 for link in links if link.startswith(folder)) + maps)
    _, status = os.waitpid(child, 0)
    code = os.waitstatus_to_exitcode(status)
    assert code >= 10, code
    held += code > 10
print(held, tries)
"""


def test_a_child_forked_after_a_scan_holds_none_of_the_parents_files(tmp_path: Path) -> None:
    out = ok_lines(run_code(_CHILD_INHERITS, str(tmp_path), timeout=TIMEOUT))[-1]
    held, tries = (int(x) for x in out.split())
    assert held == 0, f"a child held a file the parent had scanned and removed ({tries} tries)"


def _scan_many(path: str) -> int:
    return sum(rf.scan_records(path).records for _ in range(30))


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_multiprocessing_children_scan(tmp_path: Path, method: str) -> None:
    path = _file(tmp_path / "p.tfrecord")
    rf.scan_records(path)  # the parent's thread started, a map perhaps waiting
    context = multiprocessing.get_context(method)
    with context.Pool(2) as pool:
        result = pool.map_async(_scan_many, [str(path)] * 6)
        assert result.get(TIMEOUT) == [1500] * 6


_EXIT_PENDING = """
import os, sys
import recordforge as rf
folder = sys.argv[1]
how = sys.argv[2]
files = sorted(os.path.join(folder, n) for n in os.listdir(folder))
for f in files:
    rf.scan_records(f)  # the last maps still wait on the thread when it exits
if how == "_exit":
    os._exit(0)
if how == "raise":
    raise SystemExit(0)
if how == "thread":
    import threading
    def loop():
        while True:
            rf.scan_records(files[0])
    threading.Thread(target=loop, daemon=True).start()
    import time; time.sleep(0.05)
print("done")
"""


@pytest.mark.parametrize("how", ["return", "_exit", "raise", "thread"])
def test_exit_with_a_map_pending(tmp_path: Path, how: str) -> None:
    folder = tmp_path / "files"
    folder.mkdir()
    for i in range(5):
        _file(folder / f"e{i}.tfrecord", records=40, size=200_000)  # 8 MB each
    for _ in range(3):
        p = run_code(_EXIT_PENDING, str(folder), how, timeout=TIMEOUT)
        assert p.returncode == 0, p.stderr[-800:]
        assert "panic" not in p.stderr and "Fatal" not in p.stderr, p.stderr[-800:]


def test_a_file_cut_or_rewritten_right_after_its_scan(tmp_path: Path) -> None:
    path = tmp_path / "w.tfrecord"
    for i in range(30):
        _file(path, records=30, size=30_000)
        assert rf.scan_records(path).records == 30
        if i % 3 == 0:
            os.truncate(path, 0)  # the map that may wait is past the end now
        elif i % 3 == 1:
            with open(path, "r+b") as f:  # rewritten in place, shorter
                f.truncate(100)
                f.write(b"\xff" * 100)
        else:
            _file(tmp_path / "n.tfrecord", records=3, size=10).replace(path)
            assert rf.scan_records(path).records == 3
    # A cut file still names itself, with a map of another file pending.
    _file(path, records=30, size=30_000)
    rf.scan_records(_file(tmp_path / "other.tfrecord"))
    os.truncate(path, 45_000)
    with pytest.raises(rf.CorruptRecordError, match=r"w\.tfrecord"):
        rf.scan_records(path)


def test_a_file_rewritten_during_scans_on_other_threads(tmp_path: Path) -> None:
    import time

    paths = [_file(tmp_path / f"x{i}.tfrecord", records=20, size=50_000) for i in range(4)]
    stop = threading.Event()
    seen: list[BaseException] = []

    def scan(path: Path) -> None:
        while not stop.is_set():
            try:
                rf.scan_records(path)
            except BaseException as e:  # (a panic is a BaseException)
                seen.append(e)

    threads = [threading.Thread(target=scan, args=(p,)) for p in paths]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 6  # (15 s found them; 6 s a CI run can afford)
    try:
        while time.monotonic() < deadline and all(
            isinstance(e, rf.CorruptRecordError) for e in seen
        ):
            for p in paths:
                os.truncate(p, 123_456)
                _file(p, records=20, size=50_000)
    finally:
        stop.set()
        for t in threads:
            t.join(TIMEOUT)
    assert not any(t.is_alive() for t in threads)
    strange = [e for e in seen if not isinstance(e, rf.CorruptRecordError)]
    assert not strange, f"{type(strange[0]).__name__}: {strange[0]}"
    assert all(re.search(r"x\d\.tfrecord", str(e)) for e in seen)


# -- 77e0b43: short reads --------------------------------------------------------------


def _short_fs(protocol: str, k: int) -> Any:
    """An fsspec file system whose read files give at most ``k`` bytes a call."""
    from fsspec.implementations.memory import MemoryFileSystem

    class Short(io.BytesIO):
        def read(self, n: int | None = -1) -> bytes:
            return super().read(k if n is None or n < 0 or n > k else n)

        def readinto(self, b: Any) -> int:
            view = memoryview(b)[:k]
            data = super().read(len(view))
            view[: len(data)] = data
            return len(data)

    class ShortFS(MemoryFileSystem):  # type: ignore[misc]
        store: ClassVar[dict[str, Any]] = {}
        pseudo_dirs: ClassVar[list[str]] = [""]

        @classmethod
        def _strip_protocol(cls, path: str) -> str:
            return "/" + path.removeprefix(f"{protocol}://").lstrip("/")

        def _open(self, path: str, mode: str = "rb", **kw: Any) -> Any:
            if mode == "rb":
                return Short(self.cat_file(path))
            return super()._open(path, mode, **kw)

    ShortFS.protocol = protocol
    import fsspec

    fsspec.register_implementation(protocol, ShortFS, clobber=True)
    return fsspec.filesystem(protocol)


def _table(name: str, n: int) -> bytes:
    if ".jsonl" in name:
        text = "".join(json.dumps({"a": i, "b": f"w{i}é", "c": i / 4}) + "\n" for i in range(n))
    else:
        text = "a,b,c\n" + "".join(f"{i},w{i}é,{i / 4}\n" for i in range(n))
    data = text.encode()
    if name.endswith(".gz"):
        return gzip.compress(data)
    if name.endswith(".bz2"):
        return bz2.compress(data)
    return data


def _column_a(out: Path) -> list[int]:
    return [int(v) for b in rf.open_dataset(out).batches(100_000) for v in b["a"].reshape(-1)]


def _convert_and_check(url: str, out: Path, n: int, workers: int, **kw: Any) -> None:
    src = TableSource(url, **kw)
    rf.write_dataset(
        src.items(), out, to_records=src.to_records, schema=src.schema(), workers=workers
    )
    ds = rf.open_dataset(out)
    assert len(ds) == n
    for i in sorted({0, 1, n // 3, n // 2, n - 2, n - 1}):
        row = ds[i]
        assert int(row["a"]) == i and row["b"] == f"w{i}é".encode()
        assert float(row["c"]) == pytest.approx(i / 4)
    assert _column_a(out) == list(range(n))


@pytest.mark.parametrize("name", ["t.csv", "t.csv.gz", "t.csv.bz2", "t.jsonl", "t.jsonl.gz"])
@pytest.mark.parametrize("workers", [1, 2])
def test_one_byte_reads_convert_every_row(tmp_path: Path, name: str, workers: int) -> None:
    fs = _short_fs("onebyte", 1)
    fs.pipe(f"/x/{name}", _table(name, 400))
    _convert_and_check(f"onebyte://x/{name}", tmp_path / "o", 400, workers, part_bytes=1500)


@pytest.mark.parametrize("name", ["t.csv", "t.jsonl"])
def test_short_reads_of_a_file_past_two_blocks(tmp_path: Path, name: str) -> None:
    # Past the inference's two 4 MiB blocks, default parts (several), odd read sizes.
    fs = _short_fs("oddreads", 4093)
    n = 400_000 if name.endswith(".csv") else 220_000
    data = _table(name, n)
    assert len(data) > 9 << 20
    fs.pipe(f"/x/{name}", data)
    _convert_and_check(f"oddreads://x/{name}", tmp_path / "o", n, 2)


@pytest.mark.parametrize("name", ["t.csv", "t.csv.gz", "t.csv.bz2", "t.jsonl", "t.jsonl.gz"])
@pytest.mark.parametrize("workers", [1, 2])
def test_memory_urls_convert_every_row(tmp_path: Path, name: str, workers: int) -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    key = f"/adv24b/{tmp_path.name}/{name}"
    fs.pipe(key, _table(name, 3000))
    try:
        _convert_and_check(f"memory:/{key}", tmp_path / "o", 3000, workers, part_bytes=5000)
    finally:
        fs.rm(key)


def test_read_fully_edges() -> None:
    class Chunks:
        def __init__(self, chunks: list[bytes]) -> None:
            self.chunks = chunks

        def read(self, n: int) -> Any:
            if not self.chunks:
                return b""
            c = self.chunks.pop(0)
            assert len(c) <= n
            return bytearray(c) if len(c) % 2 else memoryview(c)

    assert _fs.read_fully(Chunks([b"ab", b"c", b"de"]), 5) == b"abcde"
    assert _fs.read_fully(Chunks([b"ab", b"c"]), 5) == b"abc"
    assert _fs.read_fully(Chunks([]), 5) == b""
    assert _fs.read_fully(io.BytesIO(b"xyz"), 0) == b""
    assert isinstance(_fs.read_fully(Chunks([b"abc"]), 3), bytes)


# -- 6d6cbd2: tables of no rows, through the command -----------------------------------


@pytest.mark.parametrize(
    ("name", "data", "args", "records"),
    [
        ("header.csv", b"a,b\n", [], 0),
        ("crlf_header.csv", b"a,b\r\n", [], 0),
        ("past_skip.csv", b"junk\nmore junk\na,b\n1,2\n3,4\n", ["--skip-rows", "2"], 2),
        ("header_past_skip.csv", b"junk\nmore junk\na,b\n", ["--skip-rows", "2"], 0),
        ("empty.csv", b"", [], None),
        ("blank.csv", b"\n\n\n", [], None),
        ("skip_all.csv", b"x\ny\n", ["--skip-rows", "2"], None),
        ("skip_more.csv", b"x\ny\n", ["--skip-rows", "5"], None),
        ("ws.jsonl", b"  \n\n \t\n", [], None),
        ("empty.jsonl", b"", [], None),
        ("nl.jsonl", b"\n\n", [], None),
        ("one.jsonl", b'{"a": 1}', [], 1),
        ("header.csv.gz", gzip.compress(b"a,b\n", mtime=0), [], 0),
        ("empty.csv.gz", gzip.compress(b"", mtime=0), [], None),
    ],
)
def test_tables_of_no_rows_through_the_command(
    tmp_path: Path, name: str, data: bytes, args: list[str], records: int | None
) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    out = tmp_path / "out"
    p = cli("convert", "table", str(path), "--out", str(out), *args, timeout=TIMEOUT)
    assert "Traceback" not in p.stderr, p.stderr[-1500:]
    if records is None:
        assert p.returncode == 1, (p.returncode, p.stderr[-800:])
        assert "error:" in p.stderr and name in p.stderr
        assert not (out / "dataset.json").exists()
    else:
        assert p.returncode == 0, p.stderr[-800:]
        assert len(rf.open_dataset(out)) == records


@pytest.mark.parametrize("workers", ["1", "2"])
def test_zero_rows_with_workers_through_the_command(tmp_path: Path, workers: str) -> None:
    path = tmp_path / "h.csv"
    path.write_text("a,b,c\n")
    out = tmp_path / "out"
    p = cli("convert", "table", str(path), "--out", str(out), "--workers", workers)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr[-800:]
    assert len(rf.open_dataset(out)) == 0


@pytest.mark.parametrize(
    ("name", "data", "rows"),
    [
        ("h.csv", b"a,b\n", 0),
        ("h.csv.gz", gzip.compress(b"a,b\n", mtime=0), 0),
        ("r.csv.gz", gzip.compress(b"a,b\n1,2\n", mtime=0), 1),
        ("r.jsonl", b'{"a": 1}\n{"a": 2}', 2),
    ],
)
def test_memory_url_tables_of_few_rows_agree(
    tmp_path: Path, name: str, data: bytes, rows: int
) -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    key = f"/adv24b0/{tmp_path.name}/{name}"
    fs.pipe(key, data)
    try:
        src = TableSource(f"memory:/{key}")
        parts = src.items()
        assert sum(p.rows for p in parts) == rows
        assert src.num_records() == rows
    finally:
        fs.rm(key)


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_spawned_workers_convert_a_table_through_the_command(tmp_path: Path, method: str) -> None:
    import subprocess

    from helpers import clean_env

    path = tmp_path / "t.csv"
    path.write_text("a,b\n" + "".join(f"{i},w{i}\n" for i in range(3000)))
    out = tmp_path / "out"
    command = ["convert", "table", str(path), "--out", str(out), "--workers", "2"]
    p = subprocess.run(
        [sys.executable, "-m", "recordforge", *command, "--part-bytes", "5000"],
        env=clean_env(RECORDFORGE_START_METHOD=method),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr[-1500:]
    assert _column_a(out) == list(range(3000))


@pytest.mark.parametrize("name", ["q.csv", "q.csv.gz"])
@pytest.mark.parametrize("workers", [1, 2])
def test_seven_byte_reads_of_quoted_line_ends_and_crlf(
    tmp_path: Path, name: str, workers: int
) -> None:
    fs = _short_fs("sevenbytes", 7)
    n = 1500
    rows = "".join(f'{i},"line {i}\r\nsecond, ""q"" {i}",{i}.5\r\n' for i in range(n))
    data = ("id,text,x\r\n" + rows).encode()
    fs.pipe(f"/x/{name}", gzip.compress(data) if name.endswith(".gz") else data)
    src = TableSource(f"sevenbytes://x/{name}", part_bytes=3000)
    out = tmp_path / "o"
    rf.write_dataset(
        src.items(), out, to_records=src.to_records, schema=src.schema(), workers=workers
    )
    ds = rf.open_dataset(out)
    assert len(ds) == n
    texts = [v for b in ds.batches(10_000) for v in b["text"].reshape(-1)]
    assert texts == [f'line {i}\r\nsecond, "q" {i}'.encode() for i in range(n)]


@pytest.mark.parametrize(
    ("name", "data", "error"),
    [
        ("w.jsonl", b"  \n\n", "Empty JSON stream"),
        ("e.csv", b"", "Empty CSV file"),
        ("b.csv", b"\n\n", "cannot infer number of columns"),
        ("e.csv.gz", gzip.compress(b"", mtime=0), "Empty CSV file"),
    ],
)
def test_memory_url_tables_of_nothing_are_clear_errors(
    tmp_path: Path, name: str, data: bytes, error: str
) -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    key = f"/adv24b1/{tmp_path.name}/{name}"
    fs.pipe(key, data)
    try:
        with pytest.raises(rf.ItemError, match=error) as e:
            TableSource(f"memory:/{key}").items()
        assert name in str(e.value)
    finally:
        fs.rm(key)
