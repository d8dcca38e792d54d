"""The Rust reader behind ``Dataset.batches`` and ``take``/``ds[i]``: the same values as
``rf.read_records`` + ``rf.decode_example`` and as the per-record Python path
(``Dataset._sized_in_python``), for random schemas, many files, GZIP, shards, shuffles
and damaged files."""

from __future__ import annotations

import gzip
import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import recordforge as rf
from recordforge._shards import shuffled as _shuffled
from recordforge.dataset import Ragged

KINDS = ("int64", "float32", "string")
SHAPES: tuple[tuple[int | None, ...], ...] = ((), (3,), (None,), (None, 2), (None, None))


def _values(rng: np.random.Generator, dtype: str, n: int) -> Any:
    if dtype == "int64":
        return rng.integers(-(2**62), 2**62, n)
    if dtype == "float32":
        return rng.standard_normal(n).astype(np.float32)
    if n == 0:
        return np.array([], np.bytes_)
    return [rng.bytes(int(rng.integers(0, 12))) for _ in range(n)]


def _random_dataset(
    tmp: Path, seed: int, *, files: int = 3, compression: str | None = None
) -> tuple[list[str], rf.Schema, list[dict[str, Any]]]:
    """Files of records with a random schema; returns them, the schema and each record's
    features as ``rf.decode_example`` would give them (written in the same order)."""
    rng = np.random.default_rng(seed)
    specs = {}
    for k in range(int(rng.integers(1, 8))):
        specs[f"feat{k}"] = rf.FeatureSpec(
            dtype=KINDS[int(rng.integers(len(KINDS)))],
            shape=SHAPES[int(rng.integers(len(SHAPES)))],
        )
    schema = rf.Schema(specs)
    paths = []
    rows: list[dict[str, Any]] = []
    for f in range(files):
        suffix = {None: "", "gzip": ".gz", "zlib": ".zlib"}[compression]
        path = str(tmp / f"part-{seed}-{f}.tfrecord{suffix}")
        with rf.TFRecordWriter(path, compression) as w:
            for _ in range(int(rng.integers(0, 60))):
                row: dict[str, Any] = {}
                for name, spec in specs.items():
                    shape = spec.shape
                    if shape == ():
                        n = 1
                    elif shape == (3,):
                        n = 3
                    elif shape == (None, 2):
                        n = 2 * int(rng.integers(0, 4))
                    else:
                        n = int(rng.integers(0, 5))
                    if n == 0 and rng.random() < 0.5:
                        continue  # absent: no values
                    row[name] = _values(rng, spec.dtype, n)
                    if spec.ragged:
                        lengths = []
                        left = n
                        while left:
                            lengths.append(int(rng.integers(1, left + 1)))
                            left -= lengths[-1]
                        row[f"{name}/row_lengths"] = np.array(lengths, dtype=np.int64)
                if not row:
                    row["feat0"] = _values(rng, specs["feat0"].dtype, 0)
                w.write(rf.encode_example(row))
                rows.append(row)
        paths.append(path)
    decoded = [rf.decode_example(r) for p in paths for r in rf.read_records(p)]
    assert len(decoded) == len(rows)
    return paths, schema, decoded


def _flat(value: Any) -> list[Any]:
    if isinstance(value, Ragged):
        return _flat(value.values)
    if isinstance(value, (bytes, str)):
        return [value]
    return list(np.asarray(value, dtype=object).ravel())


def _rows(batches: list[dict[str, Any]]) -> list[dict[str, list[Any]]]:
    """Per-record flat value lists from columnar batches."""
    out = []
    for batch in batches:
        n = len(next(iter(batch.values())))
        for i in range(n):
            out.append({name: _flat(column[i]) for name, column in batch.items()})
    return out


def _expected(decoded: list[dict[str, Any]], names: list[str]) -> list[dict[str, list[Any]]]:
    return [{name: _flat(d.get(name, [])) for name in names} for d in decoded]


def _names(schema: rf.Schema) -> list[str]:
    names = []
    for name, spec in schema.items():
        names.append(name)
        if spec.ragged:
            names.append(f"{name}/row_lengths")
    return names


def _same_batches(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert list(x) == list(y)
        for name in x:
            u, v = x[name], y[name]
            if isinstance(u, Ragged):
                assert isinstance(v, Ragged), name
                assert u.row_splits.tolist() == v.row_splits.tolist(), name
                u, v = u.values, v.values
            assert u.dtype == v.dtype and u.shape == v.shape, name
            assert u.tolist() == v.tolist(), name


def _both(ds: rf.Dataset, batch_size: int, **kwargs: Any) -> tuple[list[Any], list[Any]]:
    """The Rust reader's batches and the Python path's, for the same epoch."""
    epoch = ds._epoch
    fast = list(ds.batches(batch_size, **kwargs))
    ds._epoch = epoch
    slow = [c for _, c in ds._sized_in_python(batch_size, kwargs.get("drop_remainder", False))]
    return fast, slow


@pytest.mark.parametrize("seed", range(12))
def test_random_schemas_equal_decode_example(tmp_path: Path, seed: int) -> None:
    compression = [None, "gzip", "zlib"][seed % 3]
    files, schema, decoded = _random_dataset(tmp_path, seed, compression=compression)
    ds = rf.open_dataset(files, schema=schema)
    names = _names(schema)
    for batch_size in (1, 7, 64):
        fast, slow = _both(ds, batch_size)
        assert _rows(fast) == _expected(decoded, names)
        _same_batches(fast, slow)
    # select(): only some features, the same values
    some = [n for n in schema if not schema[n].ragged][:2] or list(schema)[:1]
    part = ds.select(some)
    assert _rows(list(part.batches(5))) == _expected(decoded, _names(part.schema))


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_shards_and_shuffles_equal_python_path(tmp_path: Path, compression: str | None) -> None:
    files, schema, decoded = _random_dataset(tmp_path, 99, files=5, compression=compression)
    ds = rf.open_dataset(files, schema=schema)
    n = len(decoded)
    for count, buffer, threads in itertools.product((1, 3, 8), (0, 1, 10, 1000), (1, 3)):
        parts = [ds.shard(i, count) if count > 1 else ds for i in range(count)]
        seen = 0
        for part in parts:
            if buffer:
                part = part.shuffle(buffer, seed=count)
            for batch_size, drop in ((4, False), (9, True)):
                fast, slow = _both(part, batch_size, drop_remainder=drop, threads=threads)
                _same_batches(fast, slow)
                assert all(len(next(iter(b.values()))) == batch_size for b in fast) or not drop
            seen += len(part)
            got = sum(len(next(iter(b.values()))) for b in part.batches(1000))
            assert got == len(part)
        assert seen == n


def test_shuffle_buffer_matches_its_python_twin() -> None:
    records = [bytes([i]) for i in range(200)]
    once = list(_shuffled(iter(records), 16, 7))
    assert sorted(once) == records and once != records
    assert list(_shuffled(iter(records), 16, 7)) == once
    assert list(_shuffled(iter(records), 16, 8)) != once


def _table(tmp_path: Path, n: int = 300, **kwargs: Any) -> rf.Dataset:
    columns = {
        "id": np.arange(n),
        "xy": np.random.default_rng(0).random((n, 2), dtype=np.float32),
        "name": [f"row-{i}" for i in range(n)],
    }
    rf.write_dataset(columns, tmp_path / "t", **kwargs)
    return rf.open_dataset(tmp_path / "t")


def test_corrupt_mid_file_raises_with_file_and_offset_or_is_skipped(tmp_path: Path) -> None:
    ds = _table(tmp_path, max_records=100)
    path = ds.files[1]
    offsets = rf._core.RecordFile(path).offsets()
    data = bytearray(Path(path).read_bytes())
    data[int(offsets[37]) + 20] ^= 0x40
    Path(path).write_bytes(bytes(data))
    got: list[int] = []
    with pytest.raises(rf.CorruptRecordError) as e:
        for b in rf.open_dataset(tmp_path / "t").batches(10):
            got.extend(b["id"].tolist())
    assert e.value.path == path and e.value.offset == int(offsets[37])
    assert got == list(range(130))  # every full batch before the damaged record
    skipping = rf.open_dataset(tmp_path / "t", on_corrupt="skip")
    fast, slow = _both(skipping, 16)
    _same_batches(fast, slow)
    ids = np.concatenate([b["id"] for b in fast]).tolist()
    assert ids == [i for i in range(300) if i != 137]
    assert skipping.skipped[0] == {
        "file": path,
        "start": int(offsets[37]),
        "end": int(offsets[38]),
        "reason": skipping.skipped[0]["reason"],
    }
    assert "data CRC mismatch" in skipping.skipped[0]["reason"]


def test_corrupt_record_inside_gzip_is_skipped(tmp_path: Path) -> None:
    ds = _table(tmp_path, n=50, max_records=50)
    (path,) = ds.files
    offsets = rf._core.RecordFile(path).offsets()
    data = bytearray(Path(path).read_bytes())
    data[int(offsets[10]) + 15] ^= 0x01
    gz = tmp_path / "bad.tfrecord.gz"
    gz.write_bytes(gzip.compress(bytes(data)))
    with pytest.raises(rf.CorruptRecordError) as e:
        list(rf.open_dataset(str(gz), schema=ds.schema).batches(8))
    assert e.value.path == str(gz) and e.value.offset == int(offsets[10])
    skipping = rf.open_dataset(str(gz), on_corrupt="skip", schema=ds.schema)
    ids = [int(r["id"]) for r in skipping]
    assert ids == [i for i in range(50) if i != 10]
    assert [(s["start"], s["end"]) for s in skipping.skipped] == [
        (int(offsets[10]), int(offsets[11]))
    ]


def test_schema_mismatch_names_file_and_offset(tmp_path: Path) -> None:
    path = tmp_path / "x.tfrecord"
    with rf.TFRecordWriter(path) as w:
        w.write(rf.encode_example({"a": 1}))
        w.write(rf.encode_example({"a": 1.5}))
    schema = rf.Schema({"a": rf.FeatureSpec(dtype="int64")})
    second = 16 + len(rf.encode_example({"a": 1}))
    match = rf"x\.tfrecord: record 1 \(at offset {second}\): .*float_list"
    with pytest.raises(rf.SchemaError, match=match):
        list(rf.open_dataset(str(path), schema=schema).batches(2))


def test_take_and_getitem_equal_sequential_read(tmp_path: Path) -> None:
    for index in (True, False):
        ds = _table(tmp_path / str(index), n=120, max_records=25, index=index)
        rows = list(ds)
        every = ds.take(np.arange(len(ds)))
        assert every["id"].tolist() == list(range(120))
        for i in range(len(ds)):
            got = ds[i]
            assert int(got["id"]) == int(rows[i]["id"])
            assert got["name"] == rows[i]["name"]
            assert got["xy"].tolist() == rows[i]["xy"].tolist()
        picks = [5, -1, 5, 119, 0, 63]
        taken = ds.take(picks)
        assert taken["id"].tolist() == [int(rows[i]["id"]) for i in picks]
        assert taken["name"].tolist() == [rows[i]["name"] for i in picks]
        assert taken["xy"].shape == (6, 2)
        assert ds[[1, 2]]["id"].tolist() == [1, 2]
        assert ds[np.array([3])]["name"].tolist() == [b"row-3"]
        assert ds[10:14]["id"].tolist() == [10, 11, 12, 13]
        with pytest.raises(IndexError):
            ds.take([0, 120])
        with pytest.raises(IndexError):
            ds[-121]
        for part in (ds.shard(2, 3), ds.shard(1, 7)):
            seq = [int(r["id"]) for r in part]
            assert part.take(np.arange(len(part)))["id"].tolist() == seq
            assert [int(part[i]["id"]) for i in range(len(part))] == seq


def test_take_of_random_schemas_equals_decode_example(tmp_path: Path) -> None:
    for seed in range(6):
        files, schema, decoded = _random_dataset(tmp_path, 200 + seed)
        ds = rf.open_dataset(files, schema=schema)
        if not len(ds):
            continue
        order = np.random.default_rng(seed).permutation(len(ds))
        names = _names(schema)
        assert _rows([ds.take(order)]) == [_expected(decoded, names)[i] for i in order]
        for i in order[:20].tolist():
            row = {name: _flat(v) for name, v in ds[i].items()}
            assert row == _expected(decoded, names)[i]


def test_take_checks_crcs(tmp_path: Path) -> None:
    ds = _table(tmp_path, n=20, max_records=20, index=True)
    (path,) = ds.files
    offsets = rf._core.RecordFile(path).offsets()
    data = bytearray(Path(path).read_bytes())
    data[int(offsets[4]) + 13] ^= 0x01
    Path(path).write_bytes(bytes(data))
    ds = rf.open_dataset(tmp_path / "t")
    assert ds.take([3, 5])["id"].tolist() == [3, 5]
    with pytest.raises(rf.CorruptRecordError) as e:
        ds.take([3, 4])
    assert e.value.path == path and e.value.offset == int(offsets[4])
    with pytest.raises(rf.CorruptRecordError):
        ds[4]


def test_stopping_early_and_reading_again(tmp_path: Path) -> None:
    ds = _table(tmp_path, n=5000, max_records=700)
    for _ in range(3):
        it = ds.batches(10)
        assert next(it)["id"].tolist() == list(range(10))
        del it  # the reader's threads stop at their next hand-over
    assert sum(len(b["id"]) for b in ds.batches(128)) == 5000
    assert all(b == {} for b in ds.select([]).batches(1000))


def test_doctests_of_the_dataset_module() -> None:
    import doctest

    import recordforge._reader as reader
    import recordforge.dataset as module

    wanted = {"recordforge.dataset", "recordforge._reader.Dataset.take"}
    finder = doctest.DocTestFinder()
    tests = [t for m in (module, reader) for t in finder.find(m) if t.name in wanted]
    assert {t.name for t in tests} == wanted
    runner = doctest.DocTestRunner()
    for test in tests:
        runner.run(test)
    assert runner.failures == 0
