"""Adversarial review of ``Dataset.take(indices, copy=False)`` after 478fd4b: every
record is copied from its file's memory map on the calling thread, its CRC checked on
the copy 64 KiB at a time (``Frame::copy_checked``), where records of 16 KiB and more
used to be read with ``pread`` (and takes over 4 MiB copied on two threads).

What holds: a file cut short under its map at any point (inside a header, inside a
payload in a page still backed, past a page, at a record boundary, to nothing, inside
its last page where nothing faults) is the same ``CorruptRecordError`` (type, path,
offset, reason) with and without copies, and records wholly before the cut still read;
a file rewritten in place (same length, other bytes: at the 64 KiB chunk boundaries of
a 200 KB payload, in its CRC footer, in its length) is a CRC error, never other data;
``verify=False`` copies the bytes that ``copy=True`` hands out and still reports a cut;
the first damaged record in the order asked is the error of a 9 MB take over three
shards, header or payload; a cut shard among several is the one named; views kept from
before a cut never change through failing takes; a 200 MB take repeated keeps memory
flat.

A dataset whose shard met a cut (the SIGBUS handler mapped zero pages over the rest of
the map) and was then written back in place reads it again: ``take`` (both ways) and
``ds[i]`` open the file again (``RecordFile.is_restored``) where they used to read the
zeros for the dataset's life and call the intact file damaged ("data CRC mismatch
(stored 0x00000000 ...)"); and the old map, read with ``verify=False``, is the cut's
error for a record that reaches its zero pages, not the zeros as the value (found by
this review: before 478fd4b ``take(copy=False)`` read big records with ``pread``, which
hid it for them).

Every case that cuts a file runs in its own interpreter (an unhandled SIGBUS kills it).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import ok_lines as _ok
from helpers import run_code as _child

import recordforge as rf
from recordforge import _core

# The chunk of the copy that checks the CRC (framing.rs Frame::copy_checked).
CHUNK = 64 << 10

# A child's prelude: ``dataset(root, n, size, **kw)`` writes n random blobs of ``size``
# bytes (one shard unless told), opens and maps it; ``outcome(fn)`` is what ``fn()``
# gave: ["ok", value] or [type, file name, offset, reason].
PRELUDE = """
import json, os, sys, numpy as np, recordforge as rf
from recordforge import _core

def dataset(root, n, size, **kw):
    rng = np.random.default_rng(n + size)
    blobs = [rng.bytes(size) for _ in range(n)]
    kw.setdefault("max_records", n)
    rf.write_dataset({"id": np.arange(n), "blob": blobs}, root, index=True, **kw)
    ds = rf.open_dataset(root)
    for copy in (True, False):  # mapped, and the arena made
        assert bytes(ds.take([0], copy=copy)["blob"][0]) == blobs[0]
    return ds, blobs

def offsets(path):
    return [int(o) for o in _core.RecordFile(path).offsets()]

def outcome(fn):
    try:
        return ["ok", fn()]
    except Exception as e:
        return [type(e).__name__, os.path.basename(str(getattr(e, "path", ""))),
                getattr(e, "offset", None), getattr(e, "reason", str(e))]

def values(ds, order, copy):
    got = ds.take(order, copy=copy)["blob"]
    return [bytes(v) for v in got]

def same(ds, blobs, order, copy):
    return values(ds, order, copy) == [blobs[i] for i in order]
"""


def _lines(code: str, *args: str, timeout: float = 60) -> list[Any]:
    """The JSON lines that ``PRELUDE + code`` printed, in a fresh interpreter that must
    exit normally."""
    return [json.loads(line) for line in _ok(_child(PRELUDE + code, *args, timeout=timeout))]


def _blob_dataset(root: Path, sizes: list[int], **kwargs: Any) -> tuple[rf.Dataset, list[bytes]]:
    rng = np.random.default_rng(len(sizes))
    blobs = [rng.bytes(s) for s in sizes]
    kwargs.setdefault("max_records", len(blobs))
    rf.write_dataset({"id": np.arange(len(blobs)), "blob": blobs}, root, index=True, **kwargs)
    return rf.open_dataset(root), blobs


def _error(take: Callable[[], object]) -> tuple[str, str, int, str]:
    """The CorruptRecordError that ``take()`` raises: (type, file name, offset, reason)."""
    with pytest.raises(rf.CorruptRecordError) as e:
        take()
    return type(e.value).__name__, os.path.basename(e.value.path), e.value.offset, e.value.reason


def _patch(path: str, pos: int, data: bytes) -> None:
    """``data`` written over ``path`` at ``pos`` in place: no truncation, the file keeps
    its inode and length (as ``rsync --inplace`` or a bit flip on disk)."""
    with open(path, "r+b") as f:
        f.seek(pos)
        f.write(data)


# -- a file cut short under its map, at each kind of point ----------------------------------

# 8 records of 200 KB; the file cut at `where` after it was mapped; records 1, 5, 7 taken
# with copy=True, copy=False, copy=True again; then the records wholly before the cut.
_CUTS = """
root, where = sys.argv[1], sys.argv[2]
ds, blobs = dataset(root, 8, 200_000)
path = ds.files[0]
size, o = os.path.getsize(path), offsets(path)
page = 4096
cut = {
    "header": o[5] + 5,                          # inside record 5's header
    "payload": o[5] + 100,                       # in its payload, the page still backed
    "past_a_page": (o[5] // page + 3) * page + 7,  # its payload, three pages on
    "at_the_record": o[5],                       # exactly at record 5's start
    "page_aligned": (o[6] // page + 2) * page,   # inside record 6, on a page boundary
    "to_nothing": 0,
    "footer": size - 2,                          # record 7's CRC, in the last page
    "last_page": size - 100,                     # record 7's payload, in the last page
}[where]
os.truncate(path, cut)
print(json.dumps([cut, size, o]))
for copy in (True, False, True):
    print(json.dumps(outcome(lambda: ds.take([1, 5, 7], copy=copy))))
whole = [k for k in range(8) if o[k] + 16 + 200_039 <= cut]
for copy in (False, True):
    print(json.dumps([whole, outcome(lambda: same(ds, blobs, whole[::-1], copy))]))
"""

# Which record of [1, 5, 7] is the first asked that reaches past the cut.
_FIRST_LOST = {
    "header": 5,
    "payload": 5,
    "past_a_page": 5,
    "at_the_record": 5,
    "page_aligned": 7,
    "to_nothing": 1,
    "footer": 7,
    "last_page": 7,
}


@pytest.mark.parametrize("where", list(_FIRST_LOST))
def test_a_cut_at_any_point_is_the_same_error_with_and_without_copies(
    tmp_path: Path, where: str
) -> None:
    (cut, size, offsets), *takes, whole_views, whole_copies = _lines(
        _CUTS, str(tmp_path / "d"), where
    )
    assert cut < size
    lost = offsets[_FIRST_LOST[where]]
    name = "train-00000-of-00001.tfrecord"
    reason = (
        f"the file was cut short while it was read, to {cut} bytes (changed by another "
        "program?): the record is past its new end, in part or whole"
    )
    assert takes[0] == ["CorruptRecordError", name, lost, reason], takes
    assert takes[0] == takes[1] == takes[2], "copy=True and copy=False differ"
    # Records wholly before the cut read right afterwards, from the pages still backed.
    assert whole_views[1] == whole_copies[1] == ["ok", True], (whole_views, whole_copies)
    assert whole_views[0] == whole_copies[0]
    assert len(whole_views[0]) == {"to_nothing": 0, "footer": 7, "last_page": 7}.get(
        where, 6 if where == "page_aligned" else 5
    )


# -- a file rewritten in place: other bytes of the same length -------------------------------


@pytest.mark.parametrize(
    ("at", "reason"),
    [
        (-12, "length CRC mismatch"),  # the length (a length within the file)
        (-1, "length CRC mismatch"),  # the length's CRC
        (0, "data CRC mismatch"),
        (CHUNK - 1, "data CRC mismatch"),  # the last byte of the first chunk checked
        (CHUNK, "data CRC mismatch"),  # the first of the second
        (2 * CHUNK, "data CRC mismatch"),
        (3 * CHUNK - 1, "data CRC mismatch"),  # the last byte of the last whole chunk
        ("last", "data CRC mismatch"),  # the payload's last byte (a ragged chunk)
        ("crc", "data CRC mismatch"),  # the CRC footer's first byte
        ("crc+3", "data CRC mismatch"),  # its last
    ],
)
def test_bytes_changed_in_place_after_mapping_are_a_crc_error_not_other_data(
    tmp_path: Path, at: int | str, reason: str
) -> None:
    # Record 2's payload is 200,039 bytes: three whole 64 KiB chunks and a ragged one.
    ds, blobs = _blob_dataset(tmp_path / "d", [200_000] * 4)
    path = ds.files[0]
    offsets = _core.RecordFile(path).offsets().astype(int).tolist()
    payload = offsets[3] - offsets[2] - 16
    assert payload > 3 * CHUNK
    for copy in (True, False):  # mapped, its pages in, the arena's buffer made
        assert [bytes(v) for v in ds.take([2, 3], copy=copy)["blob"]] == blobs[2:]
    where = {"last": payload - 1, "crc": payload, "crc+3": payload + 3}
    pos = offsets[2] + 12 + (where[at] if isinstance(at, str) else at)
    with open(path, "rb") as f:
        f.seek(pos)
        old = f.read(1)
    _patch(path, pos, bytes([old[0] ^ 0x40]))
    views = _error(lambda: ds.take([3, 2, 1], copy=False))
    copies = _error(lambda: ds.take([3, 2, 1], copy=True))
    assert views == copies
    assert views[2] == offsets[2] and views[3].startswith(reason), views
    # The records around it read as they were; put back, it reads again, in both ways.
    for copy in (False, True):
        assert [bytes(v) for v in ds.take([3, 1], copy=copy)["blob"]] == [blobs[3], blobs[1]]
    _patch(path, pos, old)
    for copy in (False, True):
        assert bytes(ds.take([2], copy=copy)["blob"][0]) == blobs[2]


def test_a_file_rewritten_whole_in_place_with_other_blobs_is_an_error_for_every_record(
    tmp_path: Path,
) -> None:
    # The same writer, other blobs of the same sizes: every frame has the same length,
    # so every header still checks; every payload CRC is now the other file's, and
    # matches its bytes. Rewritten in place under the map: the values read are the new
    # file's, whole, never a mix; each record is checked against the CRC read with it.
    ds, blobs = _blob_dataset(tmp_path / "a", [150_000] * 6)
    other = [bytes([i + 1]) * 150_000 for i in range(6)]
    rf.write_dataset({"id": np.arange(6), "blob": other}, tmp_path / "b", max_records=6, index=True)
    new = (tmp_path / "b" / "train-00000-of-00001.tfrecord").read_bytes()
    assert len(new) == os.path.getsize(ds.files[0])
    assert [bytes(v) for v in ds.take(range(6), copy=False)["blob"]] == blobs
    old = Path(ds.files[0]).read_bytes()
    _patch(ds.files[0], 0, new)
    for copy in (False, True):
        assert [bytes(v) for v in ds.take([5, 0, 3], copy=copy)["blob"]] == [
            other[5],
            other[0],
            other[3],
        ]
    # Only the payloads rewritten, the old CRC footers kept: every record is an error.
    offsets = _core.RecordFile(ds.files[0]).offsets().astype(int).tolist()
    for end in [*offsets[1:], len(new)]:
        _patch(ds.files[0], end - 4, old[end - 4 : end])
    for k, o in enumerate(offsets):
        views = _error(functools.partial(ds.take, [k], copy=False))
        assert views == _error(functools.partial(ds.take, [k], copy=True))
        assert views[2] == o and views[3].startswith("data CRC mismatch"), views


def test_a_file_grown_after_mapping_reads_the_records_it_had(tmp_path: Path) -> None:
    # Bytes appended after the map was made (a writer still appending, a record added):
    # the map ends where the file did; nothing is taken for a cut.
    ds, blobs = _blob_dataset(tmp_path / "d", [100_000, 70_000, 0, 131_072])
    path = ds.files[0]
    assert [bytes(v) for v in ds.take([3, 0], copy=False)["blob"]] == [blobs[3], blobs[0]]
    with open(path, "ab") as f:
        f.write(b"\xff" * 300_000)
    for copy in (False, True):
        assert [bytes(v) for v in ds.take([3, 2, 1, 0], copy=copy)["blob"]] == blobs[::-1]


@pytest.mark.parametrize("k", [1, 2, 3])
def test_payloads_of_whole_and_ragged_chunk_counts_copy_right(tmp_path: Path, k: int) -> None:
    # Blobs whose payloads are k * 64 KiB and a byte more or less (a chunk of the copy
    # that checks the CRC ends with the payload, a byte before, a byte after), in one take.
    overhead = 39  # the Example's bytes around a blob of this size (checked below)
    sizes = [k * CHUNK - overhead + d for d in (-1, 0, 1)]
    ds, blobs = _blob_dataset(tmp_path / "d", sizes)
    offsets = _core.RecordFile(ds.files[0]).offsets().astype(int)
    payloads = np.diff([*offsets, os.path.getsize(ds.files[0])]) - 16
    assert payloads.tolist() == [k * CHUNK - 1, k * CHUNK, k * CHUNK + 1]
    order = [2, 0, 1, 1, 0, 2]
    got = ds.take(order, copy=False)["blob"]
    assert [bytes(v) for v in got] == list(ds.take(order)["blob"]) == [blobs[i] for i in order]


# -- verify=False (``_core.take_records``: Dataset.take always checks) -----------------------

_VERIFY_FALSE = """
root = sys.argv[1]
ds, blobs = dataset(root, 4, 200_000)
path = ds.files[0]
o, f, wanted = offsets(path), _core.RecordFile(path), ds._wanted()

def take(arena, order):
    got = _core.take_records(
        [f], np.zeros(len(order), np.int64), np.array([o[k] for k in order], np.uint64),
        wanted, verify=False, arena=arena,
    )
    return [bytes(v) for v in got[1][0]]

arena = _core.Arena()
# A payload byte changed in place, at a chunk boundary: no CRC checked, the same bytes.
with open(path, "r+b") as fh:
    fh.seek(o[2] + 12 + 65536)
    old = fh.read(1)
    fh.seek(o[2] + 12 + 65536)
    fh.write(bytes([old[0] ^ 1]))
damaged = take(None, [2])[0]
print(json.dumps([damaged != blobs[2], sum(a != b for a, b in zip(damaged, blobs[2])),
                  take(arena, [2, 3])[0] == damaged, take(arena, [3])[0] == blobs[3]]))
os.truncate(path, os.path.getsize(path) - 100)  # inside the last page: no fault
print(json.dumps([outcome(lambda: take(a, [1, 3])) for a in (None, arena)]))
os.truncate(path, o[2] + 100)  # record 2's payload, the rest faults
print(json.dumps([outcome(lambda: take(a, [1, 2])) for a in (None, arena)]))
print(json.dumps([take(None, [1, 0]) == take(arena, [1, 0]) == [blobs[1], blobs[0]]]))
"""


def test_verify_false_copies_what_copies_give_and_still_reports_a_cut(tmp_path: Path) -> None:
    changed, last_page, faulted, before = _lines(_VERIFY_FALSE, str(tmp_path / "d"))
    assert changed == [True, 1, True, True]
    name = "train-00000-of-00001.tfrecord"
    for outcomes, record in ((last_page, 3), (faulted, 2)):
        assert outcomes[0] == outcomes[1], outcomes
        kind, file, offset, reason = outcomes[0]
        assert (kind, file) == ("CorruptRecordError", name)
        assert offset == 200_055 * record  # 200,000-byte blobs: frames of 200,055
        assert reason.startswith("the file was cut short while it was read")
    assert before == [True]


# -- the first damaged record asked, in a take of 9 MB over three shards ----------------------


def test_a_big_take_over_shards_reports_the_first_damaged_record_asked(tmp_path: Path) -> None:
    n = 60
    ds, blobs = _blob_dataset(tmp_path / "d", [150_000] * n, max_records=20)
    a, b, c = ds.files
    offs = [_core.RecordFile(p).offsets().astype(int).tolist() for p in ds.files]
    assert ds.take(range(n), copy=False)["id"].tolist() == list(range(n))  # mapped
    flip = {
        0: (a, offs[0][0] + 12 + CHUNK),  # record 0: its payload, at a chunk boundary
        31: (b, offs[1][11] + 12 + 150_039),  # record 31: its CRC footer
        59: (c, offs[2][19] + 9),  # record 59: its length's CRC
    }
    for path, pos in flip.values():
        with open(path, "rb") as f:
            f.seek(pos)
            byte = f.read(1)[0]
        _patch(path, pos, bytes([byte ^ 1]))
    data_a = (os.path.basename(a), offs[0][0], "data CRC mismatch")
    data_b = (os.path.basename(b), offs[1][11], "data CRC mismatch")
    length_c = (os.path.basename(c), offs[2][19], "length CRC mismatch")
    cases = [
        (list(range(n)), data_a),
        (list(range(n))[::-1], length_c),
        ([30, 59, 0, 31], length_c),  # a header error after no damaged payload
        ([30, 0, 59], data_a),  # a payload error before a header error
        ([1, 2, 31, 59, 0], data_b),
        ([*range(1, 31), 0, 59], data_a),
    ]
    for order, (name, offset, reason) in cases:
        for copy in (False, True):
            _, file, at, why = _error(functools.partial(ds.take, order, copy=copy))
            assert (file, at, why.split(" (")[0]) == (name, offset, reason), (order, copy)
    # The others read right, over all three shards.
    rest = [k for k in range(n) if k not in flip][::-1]
    got = ds.take(rest, copy=False)["blob"]
    assert [bytes(v) for v in got] == [blobs[k] for k in rest]


# -- a take over several shards, one of them cut --------------------------------------------

_SHARDS = """
root = sys.argv[1]
ds, blobs = dataset(root, 30, 100_000, max_records=10)
a, b, c = ds.files
o = [offsets(p) for p in ds.files]
assert same(ds, blobs, list(range(30)), False)
with open(a, "r+b") as fh:  # record 2: its payload changed in place (a data CRC error)
    fh.seek(o[0][2] + 5000)
    byte = fh.read(1)[0]
    fh.seek(o[0][2] + 5000)
    fh.write(bytes([byte ^ 1]))
os.truncate(b, o[1][4] + 30_000)  # shard b: records 10-13 whole, 14 cut, 15-19 gone
for order in ([25, 3, 16, 14, 0], [13, 12, 21, 19], [2, 18], [29, 10, 11, 12, 13, 0]):
    print(json.dumps([outcome(lambda: values(ds, order, c) == [blobs[k] for k in order])
                      for c in (False, True)]))
"""


def test_a_cut_shard_among_others_is_the_one_named(tmp_path: Path) -> None:
    lines = _lines(_SHARDS, str(tmp_path / "d"))
    b = "train-00001-of-00003.tfrecord"
    offsets = [100_055 * k for k in range(10)]  # 100,000-byte blobs: frames of 100,055
    for views, copies in lines:
        assert views == copies, (views, copies)
    assert lines[0][0][:3] == ["CorruptRecordError", b, offsets[6]]  # 16: the first lost
    assert lines[1][0][:3] == ["CorruptRecordError", b, offsets[9]]  # 19 (13, 12 whole)
    # A cut shard's error goes before a damaged record of another shard asked earlier
    # (reader.rs unless_cut: a cut is asked about first, with and without copies).
    assert lines[2][0][:3] == ["CorruptRecordError", b, offsets[8]]
    assert lines[2][0][3].startswith("the file was cut short while it was read")
    assert lines[3][0] == ["ok", True]  # records whole before the cut, and other shards


# -- views kept from before a cut ------------------------------------------------------------

_KEPT = """
root = sys.argv[1]
ds, blobs = dataset(root, 8, 200_000)
path = ds.files[0]
o = offsets(path)
kept = ds.take(range(8), copy=False)["blob"]
kept_copies = ds.take(range(8))["blob"]
os.truncate(path, o[5] + 100)
failed = [outcome(lambda: ds.take([0, 6, 1], copy=c)) for c in (False, True, False)]
after = same(ds, blobs, [4, 3, 2, 1, 0] * 3, False)  # a new take while the views live
print(json.dumps([failed[0] == failed[1] == failed[2], failed[0][2] == o[6]]))
print(json.dumps([[bytes(v) for v in kept] == blobs, list(kept_copies) == blobs, after]))
del kept
print(json.dumps([same(ds, blobs, [0, 4], False), outcome(lambda: ds.take([5], copy=False))[0]]))
"""


def test_views_kept_from_before_a_cut_never_change_through_failing_takes(
    tmp_path: Path,
) -> None:
    failed, kept, last = _lines(_KEPT, str(tmp_path / "d"))
    assert failed == [True, True]
    assert kept == [True, True, True]
    assert last == [True, "CorruptRecordError"]


# -- memory ------------------------------------------------------------------------------

_BIG = """
import resource, time
root = sys.argv[1]
blob = np.random.default_rng(0).bytes(200_000)
n = 1000  # 200 MB
rf.write_dataset({"id": np.arange(n), "blob": [blob] * n}, root, max_records=n, index=True)
ds = rf.open_dataset(root)
order = np.arange(n)
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
before = rss()
taken = ds.take(order, copy=False)  # a loop that keeps one result while taking the next
taken = ds.take(order, copy=False)
warm = rss()
for _ in range(6):
    taken = ds.take(order, copy=False)
    assert bytes(taken["blob"][-1]) == blob and bytes(taken["blob"][n // 2]) == blob
print(json.dumps([before, warm, rss(), ds._arena.kept_bytes]))
"""


def test_a_200_mb_take_repeated_keeps_memory_flat(tmp_path: Path) -> None:
    ((before, warm, after, kept),) = _lines(_BIG, str(tmp_path / "d"), timeout=120)
    total = 1000 * (200_039 + 4)  # payloads and CRCs, copied into the buffer
    # Two buffers alternate (a quarter roomier than the take), the map's pages are in.
    assert 2 * total <= kept <= 2 * total * 5 // 4 + (1 << 20)
    assert warm - before < 2 * total * 5 // 4 + total + (32 << 20), (before, warm)
    assert after - warm < 8 << 20, f"{(after - warm) >> 20} MiB more over 6 takes of 200 MB"


# -- a shard restored after a cut (bugs) ------------------------------------------------------

# Record 5's header is left in a page still backed; its payload's first page past the new
# end faults and the handler maps zero pages from there to the map's end. The file is then
# written back in place, as it was (the end of a `cp` or `rsync --inplace` that a read
# met mid-way).
_RESTORED = """
root = sys.argv[1]
ds, blobs = dataset(root, 8, 200_000)
path = ds.files[0]
o = offsets(path)
whole = open(path, "rb").read()
old = ds._shards.record_file(path)  # the dataset's map, made before the cut
assert ds[6]["id"] == 6  # ds[i]'s reader holds the map too
os.truncate(path, o[5] + 100)
print(json.dumps(outcome(lambda: ds.take([5], copy=False))[3].split(",")[0]))
with open(path, "r+b") as fh:
    fh.seek(o[5] + 100)
    fh.write(whole[o[5] + 100:])
assert open(path, "rb").read() == whole
print(json.dumps([outcome(lambda: same(ds, blobs, [5, 1], c)) for c in (False, True)]))
print(json.dumps(sum(len(b["id"]) for b in ds.batches(3))))  # batches map it again
print(json.dumps(same(rf.open_dataset(root), blobs, [5, 1], False)))
print(json.dumps(outcome(lambda: [bytes(ds[i]["blob"]) == blobs[i] for i in (5, 7, 0)])))
def old_take(k):
    got = _core.take_records([old], np.zeros(1, np.int64), np.array([o[k]], np.uint64),
                             ds._wanted(), verify=False, arena=_core.Arena())
    return bytes(got[1][0][0]) == blobs[k]
print(json.dumps([old.is_current(), old.is_restored(), outcome(lambda: old_take(5)),
                  outcome(lambda: old_take(7)), outcome(lambda: old_take(1))]))
"""


@pytest.fixture(scope="module")
def restored(tmp_path_factory: pytest.TempPathFactory) -> list[Any]:
    """What the child of ``_RESTORED`` printed: the cut's reason, the takes after the
    restore (copy=False, copy=True), the records ``batches()`` read, a new dataset's take,
    ``ds[i]`` after the restore, and ``take_records(verify=False)`` from the old map."""
    return _lines(_RESTORED, str(tmp_path_factory.mktemp("restored") / "d"))


def test_a_cut_then_restored_shard_reads_again_in_batches(restored: list[Any]) -> None:
    cut, _, batches, fresh, _, _ = restored
    assert cut == "the file was cut short while it was read"
    assert batches == 8 and fresh is True  # the file is intact


def test_take_of_a_cut_then_restored_shard_reads_it_as_batches_do(restored: list[Any]) -> None:
    _, takes, _, _, rows, _ = restored
    assert takes == [["ok", True], ["ok", True]], takes
    assert rows == ["ok", [True, True, True]], rows


def test_the_old_map_of_a_restored_shard_never_hands_out_its_zeros(restored: list[Any]) -> None:
    # verify=False: no CRC would catch the zeros; the map knows where they start.
    _, _, _, _, _, (current, was_restored, fifth, seventh, first) = restored
    assert current is False and was_restored is True  # the map knows it met a cut
    assert fifth[0] == "CorruptRecordError" and fifth[3].startswith("the file was cut short")
    assert seventh[0] == "CorruptRecordError"  # wholly in the zero pages
    assert first == ["ok", True]  # before the cut: the file's bytes
