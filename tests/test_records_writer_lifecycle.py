"""Nothing lost on write: writers that are never closed, ``flush()``, and files cut after
a flush (issue 12).

1. A writer dropped without ``close`` (``del``, collected in a reference cycle, left open
   when the program ends) completes its stream and warns with a ``ResourceWarning``, for
   paths, file objects and URLs, plain and compressed, for ``rf.TFRecordWriter`` (its
   ``__del__`` and an exit hook) and ``_core.TFRecordWriter`` (the Rust ``Drop``).
2. ``flush()`` makes every record written so far readable, with TensorFlow's bytes:
   TensorFlow 2.21's ``flush()`` is zlib's ``Z_PARTIAL_FLUSH`` (measured: not
   ``Z_SYNC_FLUSH``, no ``00 00 ff ff`` marker; its ``flush_mode`` option does not change
   it), which already makes everything written decodable, so ours is the same.
3. A compressed file that ends after a flush (its writer killed) gives every flushed
   record, then ``CorruptRecordError`` at the cut; TensorFlow reads the same records and
   ends there without an error.
4. Nothing crashes, fails on a borrow or writes twice: a writer dropped with an
   exception pending (raised by a signal handler in the middle of ``__new__``), calls
   from several threads (serialized; the exit hook waits for a daemon thread's call, a
   bounded time), and a forked child's copy (``write``/``flush`` raise, ``close`` drops
   the parent's buffered records).

TensorFlow is the oracle: it writes the same records with the same flushes, and reads
what recordforge wrote.
"""

from __future__ import annotations

import gc
import io
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fsspec
import pytest
import tensorflow as tf

import recordforge as rf
from recordforge import _core

COMPRESSIONS = [None, "gzip", "zlib"]
TF_TYPE = {None: "", "gzip": "GZIP", "zlib": "ZLIB"}
RECORDS = [f"record {i}: ".encode() * (i + 1) for i in range(20)]
UNCLOSED = "unclosed TFRecordWriter"


def frame_size(record: bytes) -> int:
    return len(record) + 16


def tf_read(path: Path, compression: str | None) -> tuple[list[bytes], Exception | None]:
    """What TensorFlow reads from ``path``, and the error it ended with, if any."""
    out: list[bytes] = []
    try:
        for r in tf.data.TFRecordDataset(str(path), compression_type=TF_TYPE[compression]):
            out.append(r.numpy())
    except Exception as e:  # whichever error TensorFlow raises is the result
        return out, e
    return out, None


def rf_read(path: Path) -> tuple[list[bytes], rf.CorruptRecordError | None]:
    """What ``rf.read_records`` reads from ``path``, and the corruption it ended with."""
    out: list[bytes] = []
    try:
        for r in rf.read_records(path):
            out.append(r)
    except rf.CorruptRecordError as e:
        return out, e
    return out, None


def assert_complete(path: Path, compression: str | None, records: list[bytes]) -> None:
    """``path`` is a whole file of ``records``: for recordforge and for TensorFlow."""
    assert list(rf.read_records(path)) == records
    assert rf.scan_records(path).records == len(records)
    assert tf_read(path, compression) == (records, None)


# 1. Writers dropped without close -------------------------------------------------------

WRITERS: dict[str, Callable[..., Any]] = {"rf": rf.TFRecordWriter, "core": _core.TFRecordWriter}


class Target:
    """Where a writer writes: a path, a BytesIO or an open file (never closed by the
    writer); ``path`` holds the bytes once ``settle`` ran."""

    def __init__(self, kind: str, tmp_path: Path, name: str) -> None:
        self.kind = kind
        self.path = tmp_path / name
        self.file: Any = None
        self.arg: Any = self.path
        if kind == "bytesio":
            self.arg = self.file = io.BytesIO()
        elif kind == "file":
            self.arg = self.file = open(self.path, "wb")  # noqa: SIM115 - closed in settle

    def settle(self) -> None:
        if self.kind == "bytesio":
            assert not self.file.closed, "the writer closed a file object passed in"
            self.path.write_bytes(self.file.getvalue())
        elif self.kind == "file":
            assert not self.file.closed, "the writer closed a file object passed in"
            # Read before closing: the writer must have flushed the file itself.
            data = self.path.read_bytes()
            self.file.close()
            assert self.path.read_bytes() == data, "the writer left bytes unflushed"


@pytest.mark.parametrize("compression", COMPRESSIONS)
@pytest.mark.parametrize("kind", ["path", "bytesio", "file"])
@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_writer_dropped_by_del_completes_its_stream(
    tmp_path: Path, compression: str | None, kind: str, writer: str
) -> None:
    target = Target(kind, tmp_path, "del.tfrecord")
    w = WRITERS[writer](target.arg, compression)
    for r in RECORDS:
        w.write(r)
    name = w.name
    with pytest.warns(ResourceWarning, match=f"{UNCLOSED} {name}"):
        del w
    target.settle()
    assert_complete(target.path, compression, RECORDS)


@pytest.mark.parametrize("compression", COMPRESSIONS)
@pytest.mark.parametrize("kind", ["path", "bytesio", "file"])
@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_writer_in_a_reference_cycle_completes_when_collected(
    tmp_path: Path, compression: str | None, kind: str, writer: str
) -> None:
    target = Target(kind, tmp_path, "cycle.tfrecord")
    w = WRITERS[writer](target.arg, compression)
    w.write_many(RECORDS)
    holder: list[Any] = [w]
    holder.append(holder)
    if writer == "rf":
        w.cycle = w  # the writer itself in the cycle (the subclass has a __dict__)
    del w, holder
    with pytest.warns(ResourceWarning, match=UNCLOSED):
        gc.collect()
    target.settle()
    assert_complete(target.path, compression, RECORDS)


def test_writer_to_a_url_dropped_commits_its_file() -> None:
    fs = fsspec.filesystem("memory")
    url = "memory://recordforge-finalize/dropped.tfrecord.gz"
    w = rf.TFRecordWriter(url, "gzip")
    w.write_many(RECORDS)
    with pytest.warns(ResourceWarning, match=f"{UNCLOSED} {url}"):
        del w
    try:
        assert list(rf.read_records(url)) == RECORDS
    finally:
        fs.rm("/recordforge-finalize", recursive=True)


def test_closed_writer_does_not_warn(tmp_path: Path) -> None:
    w = rf.TFRecordWriter(tmp_path / "closed.tfrecord", "gzip")
    w.write(b"x")
    w.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        del w
        gc.collect()


def test_error_while_completing_a_dropped_writer_is_unraisable() -> None:
    class Failing(io.BytesIO):
        def flush(self) -> None:
            raise OSError("disk on fire")

    for make in WRITERS.values():
        w = make(Failing(), "gzip")
        w.write(b"x")
        seen: list[Any] = []
        hook, sys.unraisablehook = sys.unraisablehook, seen.append
        try:
            with pytest.warns(ResourceWarning, match=UNCLOSED):
                del w
        finally:
            sys.unraisablehook = hook
        assert [type(u.exc_value) for u in seen] == [OSError], make
        assert "disk on fire" in str(seen[0].exc_value)


EXIT_SCRIPT = """
import atexit, sys
import fsspec

def save_remote():
    # Registered before recordforge is imported, so it runs after recordforge's exit hook.
    data = fsspec.filesystem("memory").cat_file("/exit/remote.tfrecord")
    open("remote.tfrecord", "wb").write(data)

atexit.register(save_remote)

import recordforge as rf
from recordforge import _core

compression = None if sys.argv[1] == "None" else sys.argv[1]
records = [f"record {i}: ".encode() * (i + 1) for i in range(20)]
f_rf = open("rf-file.tfrecord", "wb")
f_core = open("core-file.tfrecord", "wb")
writers = [
    rf.TFRecordWriter("rf-path.tfrecord", compression),
    rf.TFRecordWriter(f_rf, compression),
    rf.TFRecordWriter("memory://exit/remote.tfrecord", compression),
    _core.TFRecordWriter("core-path.tfrecord", compression),
    _core.TFRecordWriter(f_core, compression),
]
for w in writers:
    w.write_many(records)
cycle = rf.TFRecordWriter("rf-cycle.tfrecord", compression)
cycle.write_many(records)
cycle.cycle = cycle
del cycle
print("written", flush=True)
# ... and the program ends with every writer open.
"""


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_writers_left_open_at_exit_complete_their_streams(
    tmp_path: Path, compression: str | None
) -> None:
    done = subprocess.run(
        [sys.executable, "-W", "error::ResourceWarning", "-c", EXIT_SCRIPT, str(compression)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "written\n"
    names = ["rf-path", "rf-file", "remote", "core-path", "core-file", "rf-cycle"]
    for name in names:
        assert_complete(tmp_path / f"{name}.tfrecord", compression, RECORDS)
    # -W error turns each warning into an exception reported as unraisable: every
    # writer is named.
    for shown in [*names[:2], "memory://exit/remote", *names[3:]]:
        assert f"ResourceWarning: {UNCLOSED} {shown}.tfrecord" in done.stderr, done.stderr


# 2. flush() -----------------------------------------------------------------------------


def flush_batches() -> list[list[bytes]]:
    """Batches of records, each batch followed by a flush: small records, an empty one,
    and records large enough to fill zlib's and the writers' buffers (incompressible)."""
    rng = random.Random(12)
    return [
        RECORDS[:10],
        [],  # a flush with nothing new
        [b"", *RECORDS[10:]],
        [rng.randbytes(300_000), b"between", rng.randbytes(1_500_000)],
        [bytes(200_000)],  # compressible
    ]


def tf_writer(path: Path, compression: str | None) -> Any:
    return tf.io.TFRecordWriter(
        str(path), options=tf.io.TFRecordOptions(compression_type=TF_TYPE[compression])
    )


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_flush_makes_written_records_readable_with_tensorflows_bytes(
    tmp_path: Path, compression: str | None
) -> None:
    ours, theirs = tmp_path / "ours.tfrecord", tmp_path / "tf.tfrecord"
    w, t = rf.TFRecordWriter(ours, compression), tf_writer(theirs, compression)
    written: list[bytes] = []
    for i, batch in enumerate(flush_batches()):
        for r in batch:
            w.write(r)
            t.write(r)
        written += batch
        w.flush()
        t.flush()
        # The files as they stand, both writers still open.
        ours_now = tmp_path / f"ours-{i}.tfrecord"
        theirs_now = tmp_path / f"tf-{i}.tfrecord"
        shutil.copyfile(ours, ours_now)
        shutil.copyfile(theirs, theirs_now)
        assert ours_now.read_bytes() == theirs_now.read_bytes(), f"after flush {i}"
        cut = sum(frame_size(r) for r in written)
        assert w.offset == cut
        for path in (ours_now, theirs_now):
            records, error = rf_read(path)
            assert records == written
            if compression is None:
                assert error is None  # a plain file cut at a record boundary is whole
                assert rf.scan_records(path).records == len(written)
            else:
                # The stream has no end marker yet: never a silent end.
                assert error is not None
                assert (error.path, error.offset) == (str(path), cut)
                assert "cut short" in error.reason
                with pytest.raises(rf.CorruptRecordError) as scanned:
                    rf.scan_records(path)
                assert (scanned.value.path, scanned.value.offset) == (str(path), cut)
            # TensorFlow reads every flushed record; it takes the missing end of a
            # compressed stream for the end of the file (no error).
            assert tf_read(path, compression) == (written, None)
    w.write(b"after the last flush")
    t.write(b"after the last flush")
    w.close()
    t.close()
    assert ours.read_bytes() == theirs.read_bytes()
    assert_complete(ours, compression, [*written, b"after the last flush"])


@pytest.mark.parametrize("compression", ["gzip", "zlib"])
def test_flush_to_a_file_object_and_close_after_it(compression: str) -> None:
    buf = io.BytesIO()
    w = rf.TFRecordWriter(buf, compression)
    w.write_many(RECORDS[:5])
    w.flush()
    flushed = buf.getvalue()
    got = rf.read_records(io.BytesIO(flushed))
    assert [next(got) for _ in range(5)] == RECORDS[:5]
    with pytest.raises(rf.CorruptRecordError) as e:
        next(got)
    assert e.value.offset == sum(frame_size(r) for r in RECORDS[:5])
    w.write_many(RECORDS[5:])
    w.close()
    assert buf.getvalue().startswith(flushed)
    assert list(rf.read_records(io.BytesIO(buf.getvalue()))) == RECORDS


# 3. A writer killed after a flush -------------------------------------------------------

KILLED_SCRIPT = """
import sys, time
import recordforge as rf

compression = None if sys.argv[2] == "None" else sys.argv[2]
w = rf.TFRecordWriter(sys.argv[1], compression)
w.write_many([f"record {i}: ".encode() * (i + 1) for i in range(20)])
w.flush()
w.write_many([b"never flushed"] * 3)  # stays in the writer's buffers: lost on a kill
print(w.offset - 3 * (13 + 16), flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_writer_killed_after_flush_leaves_its_flushed_records(
    tmp_path: Path, compression: str | None
) -> None:
    path = tmp_path / "killed.tfrecord"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_SCRIPT, str(path), str(compression)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        flushed_at = int(proc.stdout.readline())
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    assert flushed_at == sum(frame_size(r) for r in RECORDS)
    records, error = rf_read(path)
    assert records == RECORDS
    assert tf_read(path, compression) == (RECORDS, None)
    if compression is None:
        assert error is None
        assert rf.scan_records(path).records == len(RECORDS)
        return
    assert error is not None
    assert (error.path, error.offset) == (str(path), flushed_at)
    assert str(error).startswith(f"{path}: corrupt record at byte offset {flushed_at}: ")
    with pytest.raises(rf.CorruptRecordError) as scanned:
        rf.scan_records(path)
    assert (scanned.value.path, scanned.value.offset) == (str(path), flushed_at)


FORK_SCRIPT = """
import os, sys
import recordforge as rf
from recordforge import _core

compression = None if sys.argv[1] == "None" else sys.argv[1]
writers = [rf.TFRecordWriter("rf.tfrecord", compression),
           _core.TFRecordWriter("core.tfrecord", compression)]
for w in writers:
    w.write(b"before the fork")
pid = os.fork()
if pid == 0:
    # The child ends normally, with its copies of the writers open: its exit hook and
    # its deallocation of them must not write into the parent's files.
    sys.exit(0)
assert os.waitpid(pid, 0)[1] == 0
for w in writers:
    w.write(b"after the fork")
    w.close()
"""


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_forked_child_leaves_its_parents_writers_alone(
    tmp_path: Path, compression: str | None
) -> None:
    done = subprocess.run(
        [sys.executable, "-W", "error::ResourceWarning", "-c", FORK_SCRIPT, str(compression)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert UNCLOSED not in done.stderr
    expected = tmp_path / "expected.tfrecord"
    with rf.TFRecordWriter(expected, compression) as w:
        w.write_many([b"before the fork", b"after the fork"])
    for name in ("rf", "core"):
        assert (tmp_path / f"{name}.tfrecord").read_bytes() == expected.read_bytes(), name


# 4. Interrupted construction, threads and forks -----------------------------------------


def run_script(script: str, *args: str, cwd: Path, timeout: float = 120) -> Any:
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


DROPPED_WHILE_RAISING = """
import io, sys
from recordforge import _core

compression = None if sys.argv[1] == "None" else sys.argv[1]

def made(arg):
    w = _core.TFRecordWriter(arg, compression)
    w.write(b"kept")
    return w

buf = io.BytesIO()
for arg in ("path.tfrecord", buf):
    try:
        # The writer is only on the value stack when 1 / 0 raises: it is dropped while
        # the ZeroDivisionError propagates.
        [made(arg), 1 / 0]
    except ZeroDivisionError:
        print("caught", flush=True)
open("file.tfrecord", "wb").write(buf.getvalue())
"""


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_core_writer_dropped_while_an_exception_propagates(
    tmp_path: Path, compression: str | None
) -> None:
    """The Rust ``Drop`` runs with the exception pending: it completes the stream and
    warns without losing (or tripping over) that exception. Was: SIGSEGV."""
    done = subprocess.run(
        [sys.executable, "-W", "always", "-c", DROPPED_WHILE_RAISING, str(compression)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "caught\ncaught\n"
    assert "Exception ignored" not in done.stderr, done.stderr
    assert done.stderr.count(f"ResourceWarning: {UNCLOSED}") == 2, done.stderr
    for name in ("path", "file"):
        assert_complete(tmp_path / f"{name}.tfrecord", compression, [b"kept"])


INTERRUPTED_NEW = """
import sys
import recordforge as rf

class Stop(Exception):
    pass

compression = None if sys.argv[1] == "None" else sys.argv[1]
new = rf.TFRecordWriter.__new__.__code__
opcodes = 0
stop_at = 0

def trace(frame, event, arg):
    # Raises Stop before the stop_at-th opcode of TFRecordWriter.__new__, as an exception
    # raised by a signal handler (KeyboardInterrupt) may land there.
    global opcodes
    if frame.f_code is not new:
        return None
    frame.f_trace_opcodes = True
    if event == "opcode":
        opcodes += 1
        if opcodes == stop_at:
            raise Stop
    return trace

interrupted = 0
for stop_at in range(1, 10_000):
    opcodes = 0
    sys.settrace(trace)
    try:
        w = rf.TFRecordWriter(f"w{stop_at}.tfrecord", compression)
    except Stop:
        interrupted += 1
        continue
    finally:
        sys.settrace(None)
    w.write(b"whole")
    w.close()
    break  # ran to the end: it was stopped before each of its opcodes once
print(interrupted, stop_at, flush=True)
"""


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_exception_at_any_point_of_construction(tmp_path: Path, compression: str | None) -> None:
    """An exception raised before each opcode of ``TFRecordWriter.__new__`` in turn: the
    half-made writer is dropped (with the exception pending) and completes its file, or
    no file was made. Was: SIGSEGV once the Rust object existed and ``_owner`` did not."""
    done = run_script(INTERRUPTED_NEW, str(compression), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Exception ignored" not in done.stderr, done.stderr
    interrupted, last = map(int, done.stdout.split())
    assert interrupted == last - 1 > 10
    made = 0
    for i in range(1, last):
        path = tmp_path / f"w{i}.tfrecord"
        if path.exists():
            made += 1
            assert_complete(path, compression, [])
    assert 0 < made < last - 1  # stopped both before and after the file was made
    assert_complete(tmp_path / f"w{last}.tfrecord", compression, [b"whole"])
    gc.collect()


SIGNAL_DURING_NEW = """
import signal, sys
import recordforge as rf

class Boom(Exception):
    pass

armed = False

def handler(*_):
    if armed:
        raise Boom()

signal.signal(signal.SIGALRM, handler)
compression = None if sys.argv[1] == "None" else sys.argv[1]
hits = 0
for i in range(2000):
    try:
        armed = True
        signal.setitimer(signal.ITIMER_REAL, 0.00001 * (i % 60 + 1))
        w = rf.TFRecordWriter("n.tfrecord", compression)
        armed = False
        w.close()
    except Boom:
        hits += 1
    finally:
        armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)
print("survived", hits, flush=True)
"""


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_signal_handler_raising_during_construction(
    tmp_path: Path, compression: str | None
) -> None:
    """The review's reproduction: a signal handler's exception lands at random points of
    the constructor, 2,000 times. Was: SIGSEGV within a few hundred."""
    done = run_script(SIGNAL_DURING_NEW, str(compression), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("survived "), done.stdout
    # The handler's Boom may also land in some __del__ (reported as ignored): nothing else.
    assert "Error" not in done.stderr, done.stderr


BUSY_AT_EXIT = """
import sys, threading, time
import recordforge as rf

compression = None if sys.argv[1] == "None" else sys.argv[1]
target = "daemon.tfrecord" if sys.argv[2] == "path" else open("daemon.tfrecord", "wb")
w = rf.TFRecordWriter(target, compression)
w.write_many([b"early"] * 1000)  # long before the exit
calls = 0

def loop():
    global calls
    try:
        while True:
            w.write_many([b"y" * 100] * 20_000)  # ~2.3 MB a call, the GIL released
            calls += 1
    except ValueError as e:  # closed at exit
        print("daemon:", e, flush=True)

threading.Thread(target=loop, daemon=True).start()
while calls < 3:
    time.sleep(0.01)
# The program ends with the daemon thread (almost always) inside write_many.
"""


@pytest.mark.parametrize("kind", ["path", "file"])
@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_writer_busy_in_a_daemon_thread_at_exit(
    tmp_path: Path, compression: str | None, kind: str
) -> None:
    """The exit hook waits for the call in flight, then completes the stream. Was:
    RuntimeError: Already mutably borrowed, and (GZIP) often an empty file."""
    for _ in range(3):
        done = run_script(BUSY_AT_EXIT, str(compression), kind, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert "Error" not in done.stderr, done.stderr
        records, error = rf_read(tmp_path / "daemon.tfrecord")
        assert error is None
        assert records[:1000] == [b"early"] * 1000
        assert len(records) >= 1000 + 3 * 20_000
        assert set(records[1000:]) == {b"y" * 100}
        assert (len(records) - 1000) % 20_000 == 0  # whole calls only


STUCK_AT_EXIT = """
import io, threading, time
import recordforge as rf
from recordforge import records

records._EXIT_WAIT = 0.5

class Stuck(io.BytesIO):
    # A file whose write never returns once the daemon thread is in it.
    def write(self, data):
        if threading.current_thread() is not threading.main_thread():
            inside.set()
            threading.Event().wait()
        return super().write(data)

inside = threading.Event()
w = rf.TFRecordWriter(Stuck())
stuck = rf.TFRecordWriter("stuck.tfrecord")
stuck.write(b"kept")
threading.Thread(target=lambda: w.write_many([b"x" * 1000] * 3000), daemon=True).start()
inside.wait()
"""


def test_exit_hook_waits_a_bounded_time_for_a_stuck_call(tmp_path: Path) -> None:
    """A call that never returns (a file object stuck in ``write``): the exit hook gives up
    on that writer after ``_EXIT_WAIT`` seconds, saying so, and completes the others."""
    done = run_script(STUCK_AT_EXIT, cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "TimeoutError" in done.stderr, done.stderr
    assert "another thread" in done.stderr, done.stderr
    assert "Already" not in done.stderr, done.stderr
    assert_complete(tmp_path / "stuck.tfrecord", None, [b"kept"])


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_calls_from_several_threads_are_serialized(tmp_path: Path, compression: str | None) -> None:
    """Writers shared by threads: each call happens whole, one at a time; the file is whole.
    Was: RuntimeError: Already mutably borrowed (or already borrowed) in the threads."""
    path = tmp_path / "threads.tfrecord"
    w = rf.TFRecordWriter(path, compression)
    errors: list[BaseException] = []
    stop = threading.Event()

    def batches(tag: str) -> None:
        try:
            for i in range(20):
                w.write_many([f"{tag} {i} {j} ".encode() * 20 for j in range(2000)])
        except BaseException as e:  # reported below
            errors.append(e)

    def singles() -> None:
        try:
            for i in range(2000):
                w.write(f"single {i}".encode())
        except BaseException as e:  # reported below
            errors.append(e)

    def others() -> None:
        try:
            while not stop.is_set():
                w.flush()
                assert w.offset > 0
                assert not w.closed
                repr(w)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=batches, args=(t,)) for t in "ab"]
    threads.append(threading.Thread(target=singles))
    poker = threading.Thread(target=others)
    for t in [*threads, poker]:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    poker.join()
    assert errors == []
    w.close()
    records, error = rf_read(path)
    assert error is None
    assert len(records) == 2 * 20 * 2000 + 2000
    # Each write_many's records are together, in order.
    calls = [r for r in records if not r.startswith(b"single")]
    for k in range(0, len(calls), 2000):
        tag, i, _ = calls[k].split(b" ", 2)
        want = [f"{tag.decode()} {i.decode()} {j} ".encode() * 20 for j in range(2000)]
        assert calls[k : k + 2000] == want
    assert [r for r in records if r.startswith(b"single")] == [
        f"single {i}".encode() for i in range(2000)
    ]


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_close_from_another_thread_waits_for_the_call_in_flight(
    tmp_path: Path, compression: str | None
) -> None:
    path = tmp_path / "closed-under.tfrecord"
    w = rf.TFRecordWriter(path, compression)
    written: list[int] = []
    ended: list[BaseException] = []
    started, stop = threading.Event(), threading.Event()

    def loop() -> None:
        try:
            while not stop.is_set():
                w.write_many([b"z" * 100] * 20_000)
                written.append(20_000)
                started.set()
        except BaseException as e:  # what ended it: checked below
            ended.append(e)

    t = threading.Thread(target=loop)
    t.start()
    try:
        started.wait(60)
        w.close()  # while (almost always) write_many runs in the thread
    finally:
        stop.set()
        t.join()
    assert [type(e) for e in ended] == [ValueError]
    assert "closed" in str(ended[0])
    assert w.closed
    records, error = rf_read(path)
    assert error is None
    assert len(records) == sum(written)


def test_close_with_a_timeout_while_another_thread_writes() -> None:
    """``close(timeout=...)`` gives up after that long (``TimeoutError``), leaving the
    writer open; a plain ``close`` then waits for the call and completes the stream."""
    inside, release = threading.Event(), threading.Event()

    class Slow(io.BytesIO):
        def write(self, data: Any) -> int:
            if threading.current_thread() is not threading.main_thread():
                inside.set()
                release.wait(60)
            return super().write(data)

    f = Slow()
    w = rf.TFRecordWriter(f)
    t = threading.Thread(target=lambda: w.write_many([b"x" * 1000] * 3000))
    t.start()
    try:
        assert inside.wait(60)
        with pytest.raises(TimeoutError, match="another thread"):
            w.close(timeout=0.1)
        assert not w.closed
        assert w._left_open()
    finally:
        release.set()
    w.close(timeout=1e30)
    t.join()
    assert w.closed
    assert list(rf.read_records(io.BytesIO(f.getvalue()))) == [b"x" * 1000] * 3000


def test_call_from_inside_a_call_on_the_same_thread_is_an_error() -> None:
    """A file object (or a signal handler) that calls the writer back while a call of the
    same thread is in flight: a clear error, not a deadlock."""

    class Echo(io.BytesIO):
        def write(self, data: Any) -> int:
            try:
                w.write(b"again")
            except RuntimeError as e:
                seen.append(str(e))
            return super().write(data)

    seen: list[str] = []
    w = rf.TFRecordWriter(Echo())
    w.write(b"x")
    w.flush()
    assert len(seen) == 1
    assert "same thread" in seen[0]
    w.close()


FORK_CALLS = """
import io, os, sys
import recordforge as rf
from recordforge import _core, records

compression = None if sys.argv[1] == "None" else sys.argv[1]
how, kind = sys.argv[2], sys.argv[3]

class Upload:
    # An object store's upload (an fsspec file): committed by close, also from __del__.
    def __init__(self):
        self.buf, self.closed = io.BytesIO(), False
    def write(self, data):
        return self.buf.write(data)
    def flush(self):
        pass
    def close(self):
        if not self.closed:
            self.closed = True
            with open(f"committed-by-{os.getpid()}", "wb") as f:
                f.write(self.buf.getvalue())
    def discard(self):
        self.closed = True
    def __del__(self):
        self.close()

records._fs.is_url = lambda p: str(p).startswith("fake://")
records._fs.open_file = lambda url, mode: Upload()
make = _core.TFRecordWriter if kind == "core" else rf.TFRecordWriter
target = "fake://bucket/x" if kind == "remote" else "forked.tfrecord"
with make(target, compression) as w:
    w.write(b"before the fork")
    pid = os.fork()
    if pid == 0:
        if how == "exit":
            sys.exit(0)  # leaves the with block: closes the child's copy
        for call in (lambda: w.write(b"child"), w.flush):
            try:
                call()
            except RuntimeError as e:
                print("child:", e, flush=True)
        if how == "close":
            w.close()
            print("child closed:", w.closed, flush=True)
        os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0
    w.write(b"after the fork")
if kind == "remote":
    os.rename(f"committed-by-{os.getpid()}", "forked.tfrecord")
"""


@pytest.mark.parametrize("kind", ["rf", "core", "remote"])
@pytest.mark.parametrize("how", ["exit", "calls", "close"])
@pytest.mark.parametrize("compression", [None, "gzip"])
def test_forked_child_cannot_write_its_parents_records_again(
    tmp_path: Path, compression: str | None, how: str, kind: str
) -> None:
    """A forked child that leaves a ``with`` block, or calls ``write``/``flush``/``close``
    on a writer it inherited: nothing reaches the parent's file (``write`` and ``flush``
    raise), and an upload is not committed. Was: the parent's buffered records written
    twice."""
    done = run_script(FORK_CALLS, str(compression), how, kind, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    if how == "exit":
        assert lines == []
    else:
        assert len(lines) == 2 + (how == "close"), lines
        for line in lines[:2]:
            assert line.startswith("child: ") and "forked" in line, line
        if how == "close":
            assert lines[2] == "child closed: True"
    assert [p.name for p in tmp_path.glob("committed-by-*")] == []
    expected = tmp_path / "expected.tfrecord"
    with rf.TFRecordWriter(expected, compression) as w:
        w.write_many([b"before the fork", b"after the fork"])
    assert (tmp_path / "forked.tfrecord").read_bytes() == expected.read_bytes()


class _FailingSink(io.RawIOBase):
    """A file object whose writes fail once ``fail_after`` bytes were taken."""

    def __init__(self, fail_after: int) -> None:
        self.data = bytearray()
        self.fail_after = fail_after

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        if len(self.data) + len(b) > self.fail_after:
            raise OSError(28, "No space left on device")
        self.data += b
        return len(b)


@pytest.mark.parametrize("checksum", [None, "crc32c"])
def test_a_failed_write_stops_the_writer_and_its_close_raises(checksum: str | None) -> None:
    """A write that fails part-way may leave a record cut short in the file: no later
    record follows it (write, write_many, flush raise), and close raises too (nothing
    silent), after letting the file go; a refused argument (not bytes) stops nothing."""
    sink = _FailingSink(600_000)
    w = rf.TFRecordWriter(sink, checksum=checksum)
    with pytest.raises(TypeError):
        w.write(7)  # type: ignore[arg-type]
    w.write(b"fine")
    with pytest.raises(OSError, match="No space left"):
        w.write(os.urandom(3 << 20))
    for call in (lambda: w.write(b"x"), lambda: w.write_many([b"y"]), w.flush):
        with pytest.raises(OSError, match=r"an earlier write failed .*No space left"):
            call()
    with pytest.raises(OSError, match="an earlier write failed"):
        w.close()
    assert w.closed and w.checksum is None
    w.close()  # closed: nothing more to say
    with pytest.raises(rf.CorruptRecordError):
        list(rf.read_records(io.BytesIO(bytes(sink.data))))


def test_a_failed_write_in_a_with_block_is_the_error_seen(tmp_path: Path) -> None:
    """In a ``with`` block the failed write's own error propagates (the close that ends
    the block says nothing more), and a writer collected unclosed after one warns about
    being unclosed only."""
    with (
        pytest.raises(OSError, match="No space left") as caught,
        rf.TFRecordWriter(_FailingSink(100)) as w,
    ):
        w.write(b"z" * 200)
    assert "earlier write failed" not in str(caught.value)
    assert w.closed
    w2 = rf.TFRecordWriter(_FailingSink(100))
    with pytest.raises(OSError, match="No space left"):
        w2.write(os.urandom(3 << 20))  # past the writer's 1 MiB buffer: fails now
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        del w2
        gc.collect()
    assert [str(s.message) for s in seen if issubclass(s.category, ResourceWarning)]
