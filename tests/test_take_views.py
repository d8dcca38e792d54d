"""``ds.take(indices, copy=False)``: bytes values as read-only memoryviews of a buffer
reused across calls (``_core.Arena``): the same values as ``copy=True`` for every shape,
small and big records (over 64 KiB: copied and hashed a chunk at a time) copied from the
map, both CRCs checked on the copy, a view unchanged while it is kept, no fresh memory
once the buffer is reused."""

from __future__ import annotations

import gc
import os
import resource
import threading
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import recordforge as rf

# A big record: over the 64 KiB chunks that the copy checks its CRC in (framing.rs
# Frame::copy_checked).
CHUNK = 64 << 10


def _blobs(n: int, big: bool) -> list[bytes]:
    rng = np.random.default_rng(n)
    sizes = rng.integers(CHUNK // 4, 3 * CHUNK, n) if big else rng.integers(0, 300, n)
    return [rng.bytes(int(s)) for s in sizes]


def _dataset(tmp_path: Path, n: int, big: bool, **kwargs: Any) -> tuple[rf.Dataset, list[bytes]]:
    blobs = _blobs(n, big)
    columns = {
        "id": np.arange(n),
        "blob": blobs,
        "pair": [[b, b[:3]] for b in blobs],  # fixed shape (2,)
        # ragged, some records empty
        "tags": [np.array([b"t"] * (i % 4), dtype=np.bytes_) for i in range(n)],
    }
    rf.write_dataset(columns, tmp_path, max_records=max(1, n // 3), **kwargs)
    return rf.open_dataset(tmp_path), blobs


def _as_bytes(value: Any) -> Any:
    """Every memoryview in ``value`` (an object array or a Ragged) as bytes."""
    if isinstance(value, rf.Ragged):
        return [_as_bytes(row) for row in value]
    if isinstance(value, np.ndarray) and value.dtype == object:
        return [_as_bytes(v) for v in value.tolist()]
    if isinstance(value, list):
        return [_as_bytes(v) for v in value]
    return bytes(value) if isinstance(value, memoryview) else value


@pytest.mark.parametrize("big", [False, True])
def test_views_hold_the_bytes_copies_hold_for_every_shape(tmp_path: Path, big: bool) -> None:
    ds, blobs = _dataset(tmp_path, 60, big)
    order = np.random.default_rng(0).integers(-60, 60, 200)  # repeats, negatives, every file
    want, got = ds.take(order), ds.take(order, copy=False)
    assert list(got) == list(want)
    assert np.array_equal(got["id"], want["id"])
    assert all(isinstance(v, memoryview) and v.readonly for v in got["blob"])
    assert got["pair"].shape == want["pair"].shape == (200, 2)
    for name in ("blob", "pair", "tags"):
        assert _as_bytes(got[name]) == _as_bytes(want[name]), name
    assert [bytes(v) for v in got["blob"]] == [blobs[i] for i in order.tolist()]
    empty = ds.take([], copy=False)
    assert len(empty["blob"]) == 0 and len(empty["id"]) == 0


def test_a_kept_view_is_never_overwritten_and_dropped_ones_are_reused(tmp_path: Path) -> None:
    ds, blobs = _dataset(tmp_path, 30, big=True)
    first = ds.take([0, 1, 2], copy=False)
    kept_first = weakref.ref(first["blob"][0].obj)
    used: list[weakref.ref[Any]] = []
    later = None
    for start in [3] * 10:  # `first` kept throughout; each result until the next
        later = ds.take(list(range(start, start + 3)), copy=False)
        buffer = later["blob"][0].obj
        assert buffer is not kept_first()
        if not any(u() is buffer for u in used):
            used.append(weakref.ref(buffer))
        assert [bytes(v) for v in first["blob"]] == blobs[:3]
        assert [bytes(v) for v in later["blob"]] == blobs[start : start + 3]
    # The loop alternates between two buffers, no new one a call.
    assert len(used) == 2
    del first, later
    gc.collect()
    assert kept_first() is None  # no longer kept by the arena: freed with its last view
    again = ds.take([6], copy=False)
    assert any(u() is again["blob"][0].obj for u in used)
    assert bytes(again["blob"][0]) == blobs[6]


def test_no_fresh_memory_once_the_buffer_is_reused(tmp_path: Path) -> None:
    # 40 records of 150 KB a call: bytes values would be ~1,500 new pages every call.
    n = 120
    blob = np.random.default_rng(0).bytes(150_000)
    rf.write_dataset({"id": np.arange(n), "blob": [blob] * n}, tmp_path, max_records=40)
    ds = rf.open_dataset(tmp_path)
    calls = [np.random.default_rng(s).integers(0, n, 40) for s in range(12)]
    for indices in calls[:2]:  # the two buffers made
        got = ds.take(indices, copy=False)
    del got
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    total = 0
    for indices in calls[2:]:
        got = ds.take(indices, copy=False)  # the previous result kept while taking
        total += sum(len(v) for v in got["blob"])
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    assert total == 10 * 40 * len(blob)
    assert faults < 200, faults  # 10 calls; fresh buffers would be ~15,000 faults
    assert 0 < ds._arena.kept_bytes < 4 * 40 * (len(blob) + 64)  # type: ignore[union-attr]


@pytest.mark.parametrize("big", [False, True])
def test_damage_names_file_and_offset_and_checks_the_copy(tmp_path: Path, big: bool) -> None:
    ds, _ = _dataset(tmp_path / "t", 30, big, index=True)
    path = ds.files[1]
    offsets = rf._core.RecordFile(path).offsets()
    data = bytearray(Path(path).read_bytes())
    data[int(offsets[3]) + 30] ^= 0x01  # payload of record 13: data CRC
    data[int(offsets[6]) + 2] ^= 0x01  # length of record 16: length CRC
    Path(path).write_bytes(bytes(data))
    ds = rf.open_dataset(tmp_path / "t")
    for bad, k in ((13, 3), (16, 6)):
        for copy in (True, False):
            with pytest.raises(rf.CorruptRecordError) as e:
                ds.take([0, 29, bad, 1], copy=copy)
            assert e.value.path == path and e.value.offset == int(offsets[k]), copy
    assert [int(i) for i in ds.take([0, 29, 12, 14], copy=False)["id"]] == [0, 29, 12, 14]


def test_a_big_take_reports_the_first_damaged_record(tmp_path: Path) -> None:
    # A take of 10 MB; the error is the first damaged record's in the order asked.
    n = 100
    blob = np.random.default_rng(1).bytes(100_000)
    rf.write_dataset({"id": np.arange(n), "blob": [blob] * n}, tmp_path, max_records=n)
    (path,) = rf.open_dataset(tmp_path).files
    offsets = rf._core.RecordFile(path).offsets()
    data = bytearray(Path(path).read_bytes())
    for k in (80, 95):
        data[int(offsets[k]) + 5000] ^= 0x10
    Path(path).write_bytes(bytes(data))
    ds = rf.open_dataset(tmp_path)
    assert [bytes(v) == blob for v in ds.take(range(80), copy=False)["blob"]] == [True] * 80
    for order, first in ((list(range(n)), 80), (list(range(n))[::-1], 95)):
        with pytest.raises(rf.CorruptRecordError) as e:
            ds.take(order, copy=False)
        assert e.value.offset == int(offsets[first])


def test_a_file_cut_short_after_opening_is_an_error_naming_it(tmp_path: Path) -> None:
    ds, _ = _dataset(tmp_path, 9, big=True)
    last = len(ds) - 1
    assert len(ds.take([0, last], copy=False)["blob"]) == 2  # the files open and mapped
    path = ds.files[-1]
    (offset, *_) = rf._core.RecordFile(path).offsets()[-1:].tolist()
    # The last record's payload is cut off (its header is left, in a page still backed):
    # the zeros read there from the map are the file's cut, not a CRC mismatch.
    os.truncate(path, offset + 100)
    with pytest.raises(rf.CorruptRecordError, match=r"cut short while it was read") as cut:
        ds.take([last], copy=False)
    assert cut.value.path.endswith(Path(path).name) and cut.value.offset == offset
    assert int(ds.take([0], copy=False)["id"][0]) == 0


def test_threads_taking_views_at_once(tmp_path: Path) -> None:
    ds, blobs = _dataset(tmp_path, 40, big=True)
    errors: list[BaseException] = []

    def take(seed: int) -> None:
        try:
            rng = np.random.default_rng(seed)
            kept: list[tuple[dict[str, Any], list[int]]] = []
            for _ in range(30):
                indices = rng.integers(0, 40, 8).tolist()
                kept = [(ds.take(indices, copy=False), indices), *kept[:2]]
                for got, asked in kept:  # the views kept are untouched by every thread
                    assert [bytes(v) for v in got["blob"]] == [blobs[i] for i in asked]
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=take, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
