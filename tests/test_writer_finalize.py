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
