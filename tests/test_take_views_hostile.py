"""Adversarial review of ``Dataset.take(indices, copy=False)`` (``_core.Arena``): views
never see their bytes change whatever holds them, hostile offsets and damage are the
errors ``copy=True`` gives, odd shapes of datasets read the same; no Python code runs
while the arena's lock is held (weakref callbacks, finalizers of a gc pass: a take from
them, or from a thread they wait for, would deadlock), a failed allocation is a
``MemoryError``, and the error is the first damaged record in the order asked."""

from __future__ import annotations

import gc
import os
import struct
import subprocess
import sys
import textwrap
import threading
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import recordforge as rf
from recordforge import _core


def _blob_dataset(root: Path, sizes: list[int], **kwargs: Any) -> tuple[rf.Dataset, list[bytes]]:
    rng = np.random.default_rng(len(sizes))
    blobs = [rng.bytes(s) for s in sizes]
    n = len(blobs)
    rf.write_dataset({"id": np.arange(n), "blob": blobs}, root, **kwargs)
    return rf.open_dataset(root), blobs


def _as_bytes(values: Any) -> list[bytes]:
    return [bytes(v) for v in values]


def _run(code: str, timeout: float = 3.0) -> subprocess.CompletedProcess[str] | None:
    """``code`` in a fresh interpreter (a crash or hang cannot take the suite down);
    None when it hung past ``timeout``."""
    try:
        return subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return None


# A dataset of 10 records of 2 KB in a subprocess: ``ds``, ``blobs``.
PRELUDE = """
import gc, sys, tempfile, threading, time, weakref
import numpy as np
import recordforge as rf
from recordforge import _core
d = tempfile.mkdtemp()
blobs = [bytes([i]) * 2000 for i in range(10)]
rf.write_dataset({"id": np.arange(10), "blob": blobs}, d, max_records=10)
ds = rf.open_dataset(d)
"""


def test_sizes_around_the_copy_chunk_and_empty_values(tmp_path: Path) -> None:
    # Blobs whose records' payloads are 65535, 65536 and 65537 bytes (a 64 KiB chunk of
    # the copy that checks the CRC, and a byte more or less), empty values and single
    # bytes, in one take, repeated.
    sizes = [*range(65536 - 40, 65536 + 10), 0, 1, 0]
    ds, blobs = _blob_dataset(tmp_path, sizes, max_records=1000, index=True)
    offsets = _core.RecordFile(ds.files[0]).offsets().astype(int)
    payloads = np.diff([*offsets, os.path.getsize(ds.files[0])]) - 16
    assert {65535, 65536, 65537} <= set(payloads.tolist())
    order = [*range(len(sizes)), *range(len(sizes))[::-1], -1, -1]
    got, want = ds.take(order, copy=False), ds.take(order)
    assert _as_bytes(got["blob"]) == list(want["blob"]) == [blobs[i] for i in order]
    assert np.array_equal(got["id"], want["id"])


def test_many_small_records_copied_and_decoded_on_threads(tmp_path: Path) -> None:
    # 6,000 records (decoded in runs of 1,024) and > 4 MiB.
    sizes = np.random.default_rng(3).integers(0, 3000, 5000).tolist()
    ds, blobs = _blob_dataset(tmp_path, sizes, max_records=1700)
    order = np.random.default_rng(4).integers(-5000, 5000, 6000)
    got = ds.take(order, copy=False)
    assert _as_bytes(got["blob"]) == [blobs[i] for i in order.tolist()]
    assert np.array_equal(got["id"], np.arange(5000)[order])


def test_whatever_holds_the_bytes_they_never_change(tmp_path: Path) -> None:
    ds, blobs = _blob_dataset(tmp_path, [20_000] * 6 + [300] * 6, max_records=12)
    got = ds.take(range(12), copy=False)
    v = got["blob"]
    held: list[tuple[Any, bytes]] = [
        (np.frombuffer(v[0], dtype=np.uint8), blobs[0]),
        (v[1].cast("c"), blobs[1]),
        (v[2][100:][5:9], blobs[2][105:109]),  # a slice of a slice
        (v[3].toreadonly(), blobs[3]),
        (v[6].obj, None),  # the whole buffer, through .obj
        (np.frombuffer(v[7], dtype=np.uint8)[::2], blobs[7][::2]),
    ]
    with v[8] as released:  # released on exit: the array made from it must still hold
        held.append((np.frombuffer(released, dtype=np.uint8), blobs[8]))
    cycle: list[Any] = [v[9]]
    cycle.append(cycle)  # a view only a gc cycle holds
    box: dict[str, Any] = {}
    other = threading.Thread(target=lambda src=v, out=box: out.update(view=src[10]))
    other.start()
    other.join()
    held.append((box["view"], blobs[10]))
    whole = bytes(v[6].obj)
    del got, v, cycle, other, box
    for seed in range(8):  # takes that would reuse any buffer no longer referred to
        again = ds.take(np.random.default_rng(seed).integers(0, 12, 40), copy=False)
        if seed % 3:
            del again
            gc.collect()
    for value, expected in held:
        data = value.tobytes() if hasattr(value, "tobytes") else bytes(value)
        assert data == (whole if expected is None else expected)


def test_views_outlive_the_dataset_and_its_maps(tmp_path: Path) -> None:
    ds, blobs = _blob_dataset(tmp_path, [30_000, 10, 5000], max_records=2)
    got = ds.take([2, 0, 1], copy=False)
    ref = weakref.ref(ds)
    del ds
    gc.collect()
    assert ref() is None
    assert _as_bytes(got["blob"]) == [blobs[2], blobs[0], blobs[1]]


def test_threads_taking_big_views_while_others_drop_theirs(tmp_path: Path) -> None:
    # Takes over 4 MiB from 6 threads at once, each keeping its last result while taking
    # the next and checking every view it holds.
    ds, blobs = _blob_dataset(tmp_path, [150_000] * 30 + [50] * 30, max_records=20)
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            kept: list[tuple[Any, list[int]]] = []
            for _ in range(8):
                asked = rng.integers(0, 60, 70).tolist()
                kept = [(ds.take(asked, copy=False)["blob"], asked), *kept[:1]]
                for views, which in kept:
                    assert _as_bytes(views) == [blobs[i] for i in which]
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


@pytest.mark.parametrize("size", [300, 40_000])
def test_a_failing_take_leaves_live_views_and_the_next_take_right(
    tmp_path: Path, size: int
) -> None:
    ds, blobs = _blob_dataset(tmp_path / "d", [size] * 8, max_records=8, index=True)
    path = ds.files[0]
    offsets = _core.RecordFile(path).offsets().astype(int)
    data = bytearray(Path(path).read_bytes())
    data[offsets[5] + 40] ^= 0x04  # record 5: its payload
    Path(path).write_bytes(bytes(data))
    ds = rf.open_dataset(tmp_path / "d")
    first = ds.take([0, 1], copy=False)
    second = ds.take([2, 3], copy=False)  # both buffers now held
    for _ in range(3):
        with pytest.raises(rf.CorruptRecordError) as e:
            ds.take([4, 6, 7, 5, 0], copy=False)  # good records copied before the bad one
        assert e.value.path == path and e.value.offset == offsets[5]
    del second
    with pytest.raises(rf.CorruptRecordError):
        ds.take([7, 6, 5], copy=False)  # into the freed buffer
    assert _as_bytes(first["blob"]) == blobs[:2]
    assert _as_bytes(ds.take([4, 6, 7], copy=False)["blob"]) == [blobs[4], blobs[6], blobs[7]]


def test_hostile_offsets_are_the_errors_copies_give(tmp_path: Path) -> None:
    ds, _ = _blob_dataset(tmp_path, [20_000] * 3, max_records=3)
    path = ds.files[0]
    size = os.path.getsize(path)
    second = int(_core.RecordFile(path).offsets()[1])
    with open(path, "ab") as f:  # a header whose length (CRC valid) runs past the end
        length = struct.pack("<Q", 10**8)
        f.write(length + struct.pack("<I", rf.masked_crc32c(length)) + b"x" * 100)
    file = _core.RecordFile(path)
    for offset in (size, size + 50, second + 7, second - 1, size + 110, size + 112, 2**64 - 1):
        errors = []
        for arena in (None, _core.Arena()):
            with pytest.raises(Exception) as e:
                _core.take_records(
                    [file], np.zeros(1, np.int64), np.array([offset], np.uint64), ds._wanted(),
                    arena=arena,
                )  # fmt: skip
            errors.append((type(e.value), str(e.value)))
        assert errors[0] == errors[1]
        assert str(offset) in errors[1][1]
        if offset < size + 112:
            assert path in errors[1][1] and errors[1][0] is rf.CorruptRecordError


def test_a_record_against_the_schema_names_file_and_offset(tmp_path: Path) -> None:
    path = str(tmp_path / "a.tfrecord")
    with rf.TFRecordWriter(path) as w:
        w.write(rf.encode_example({"blob": b"x" * 20_000, "id": 0}))
        w.write(rf.encode_example({"blob": 7, "id": 1}))
    schema = rf.Schema({"blob": rf.FeatureSpec(dtype="bytes"), "id": rf.FeatureSpec(dtype="int64")})
    ds = rf.open_dataset(path, schema=schema)
    offset = int(_core.RecordFile(path).offsets()[1])
    kept = ds.take([0], copy=False)
    for copy in (True, False):
        with pytest.raises(rf.SchemaError, match=f"{path}: record at offset {offset}: "):
            ds.take([0, 1], copy=copy)
    assert bytes(kept["blob"][0]) == b"x" * 20_000


def test_one_huge_take_is_not_kept(tmp_path: Path) -> None:
    # The same 300 KB record 1,000 times: one buffer of 375 MB, over the 256 MiB kept.
    ds, blobs = _blob_dataset(tmp_path, [300_000, 10], max_records=2)
    got = ds.take(np.zeros(1000, np.int64), copy=False)
    assert all(bytes(v) == blobs[0] for v in got["blob"][::111])
    buffer = weakref.ref(got["blob"][0].obj)
    assert ds._arena is not None and ds._arena.kept_bytes == 0
    del got
    assert buffer() is None  # freed with its last view
    assert _as_bytes(ds.take([1, 0], copy=False)["blob"]) == [blobs[1], blobs[0]]
    assert ds._arena.kept_bytes < 1 << 20


def test_shards_sequences_remote_and_indexing(tmp_path: Path) -> None:
    ds, blobs = _blob_dataset(tmp_path / "d", [17_000, 5, 0, 900] * 5, max_records=30)
    for i in range(3):  # one file: every 3rd record
        part = ds.shard(i, 3)
        got, want = part.take([*range(len(part)), -1], copy=False), part.take([-1])
        assert _as_bytes(got["blob"]) == [*blobs[i::3], blobs[i::3][-1]]
        assert bytes(got["blob"][-1]) == want["blob"][0]
    assert ds[3]["blob"] == blobs[3] and list(ds[[0, 1]]["blob"]) == blobs[:2]  # bytes
    url = "memory://take-views-hostile/d"
    rf.write_dataset({"id": np.arange(20), "blob": blobs}, url, max_records=6, index=True)
    remote = rf.open_dataset(url)
    assert list(remote.take([19, 0, 0], copy=False)["blob"]) == [blobs[19], blobs[0], blobs[0]]
    lists = {"tokens": rf.FeatureSpec(dtype="string", shape=(None,))}
    schema = rf.Schema({"name": rf.FeatureSpec(dtype="bytes")}, feature_lists=lists)
    tokens = [[np.array([b"t%d" % i * 9000] * (i % 3), np.bytes_)] for i in range(7)]
    records = [
        rf.encode_sequence_example({"name": blobs[i]}, {"tokens": tokens[i]}) for i in range(7)
    ]
    rf.write_dataset(records, tmp_path / "s", schema=schema, max_records=3, index=True)
    seq = rf.open_dataset(tmp_path / "s")
    got, want = seq.take([6, 0, 4, 4], copy=False), seq.take([6, 0, 4, 4])
    assert _as_bytes(got["name"]) == [blobs[6], blobs[0], blobs[4], blobs[4]]
    assert repr(got["tokens"]) == repr(want["tokens"])


def test_scan_without_populate_counts_and_finds_damage(tmp_path: Path) -> None:
    ds, _ = _blob_dataset(tmp_path, [70_000] * 40, max_records=40)
    path = ds.files[0]
    stats = rf.scan_records(path, threads=3)
    assert stats.records == 40 and stats.stream_bytes == os.path.getsize(path)
    data = bytearray(Path(path).read_bytes())
    data[-9000] ^= 1  # the last record's payload
    Path(path).write_bytes(bytes(data))
    with pytest.raises(rf.CorruptRecordError):
        rf.scan_records(path, threads=3)


# -- found by this review, fixed: locks, allocation, error order -------------------------


@pytest.mark.parametrize("where", ["in the callback", "on another thread"])
def test_a_weakref_callback_on_a_buffer_cannot_deadlock_take(where: str) -> None:
    callback = (
        "lambda _: ds.take([1], copy=False)"
        if where == "in the callback"
        else "lambda _: time.sleep(0.4)"  # e.g. a log line written: the GIL let go
    )
    done = _run(
        PRELUDE
        + textwrap.dedent(f"""
        small = ds.take([0], copy=False)
        ref = weakref.ref(small["blob"][0].obj, {callback})
        del small
        other = threading.Thread(target=lambda: (time.sleep(0.1), ds.take([2], copy=False)))
        other.start()
        big = ds.take(range(10), copy=False)  # needs a bigger buffer: the free one dropped
        other.join()
        print("done")
        """)
    )
    assert done is not None, "deadlocked"
    assert done.stdout.split() == ["done"], done.stderr


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="gc runs on allocation up to 3.11")
def test_a_finalizer_run_by_gc_inside_take_cannot_deadlock_other_takes() -> None:
    script = (
        PRELUDE
        + """
class Cycle:  # garbage in a reference cycle whose finalizer lets go of the GIL
    def __init__(self): self.me = self
    def __del__(self): time.sleep(0.2)

ds.take([0], copy=False)
file = _core.RecordFile(ds.files[0])
args = ([file], np.zeros(1, np.int64), file.offsets()[:1].astype(np.uint64), ds._wanted())
for threshold in range(2, 8):  # whichever allocation the collection falls on
    other = threading.Thread(target=lambda: (time.sleep(0.05), ds.take([1], copy=False)))
    other.start()
    gc.collect(); gc.disable(); Cycle(); gc.set_threshold(threshold); gc.enable()
    _core.take_records(*args, arena=ds._arena)
    other.join()
print("done")
"""
    )
    done = _run(script, timeout=3.5)
    assert done is not None, "deadlocked"
    assert done.stdout.split() == ["done"], done.stderr


def test_a_take_too_big_for_memory_is_a_memory_error() -> None:
    done = _run(
        textwrap.dedent("""
        import resource, tempfile
        import numpy as np
        import recordforge as rf
        d = tempfile.mkdtemp()
        rf.write_dataset({"blob": [b"x" * (1 << 20)]}, d)
        ds = rf.open_dataset(d)
        ds.take([0], copy=False)
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
        try:
            ds.take(np.zeros(6000, np.int64), copy=False)  # 6 GB of values
        except MemoryError:
            print("MemoryError")
        except BaseException as e:
            print(type(e).__name__)
        print(bytes(ds.take([0], copy=False)["blob"][0]) == b"x" * (1 << 20))
        """),
        timeout=30,
    )
    assert done is not None
    assert done.stdout.split() == ["MemoryError", "True"], done.stdout + done.stderr[-300:]


@pytest.mark.parametrize("size", [300, 40_000])
def test_the_first_damaged_record_asked_is_the_error(tmp_path: Path, size: int) -> None:
    ds, _ = _blob_dataset(tmp_path / "d", [size] * 6, max_records=6, index=True)
    path = ds.files[0]
    offsets = _core.RecordFile(path).offsets().astype(int)
    data = bytearray(Path(path).read_bytes())
    data[offsets[2] + 30] ^= 1  # record 2: payload (data CRC)
    data[offsets[4] + 2] ^= 1  # record 4: length (length CRC)
    Path(path).write_bytes(bytes(data))
    ds = rf.open_dataset(tmp_path / "d")
    for copy in (True, False):
        with pytest.raises(rf.CorruptRecordError) as e:
            ds.take([0, 2, 4], copy=copy)
        assert e.value.offset == offsets[2], f"copy={copy}: offset {e.value.offset}"
