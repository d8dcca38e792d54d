"""``ds[i]``: one record through the Rust ``RowReader`` (file and offset lookup, both
CRCs, decode, the dict in one call) equals the sequential read, for every index, shape,
shard and thread, with each file opened once."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import count_record_files

import recordforge as rf


def _table(tmp_path: Path, n: int, **kwargs: Any) -> rf.Dataset:
    rng = np.random.default_rng(0)
    columns = {
        "id": np.arange(n),
        "x": rng.random(n, dtype=np.float32),
        "xy": rng.random((n, 2), dtype=np.float32),
        "name": [f"row-{i}" for i in range(n)],
    }
    rf.write_dataset(columns, tmp_path, **kwargs)
    return rf.open_dataset(tmp_path)


def _assert_same(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert list(got) == list(want)
    for name, value in want.items():
        assert type(got[name]) is type(value), name
        if isinstance(value, (np.ndarray, np.generic)):
            assert got[name].dtype == value.dtype and got[name].shape == value.shape, name
            assert np.array_equal(got[name], value), name
        else:
            assert got[name] == value, name


@pytest.mark.parametrize("index", [True, False])
def test_every_index_equals_the_sequential_read_with_each_file_opened_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, index: bool
) -> None:
    ds = _table(tmp_path, 230, max_records=50, index=index)
    assert len(ds.files) == 5
    opened = count_record_files(monkeypatch)
    rows = list(ds)  # maps each file, kept for the random access that follows
    for _ in range(2):
        for i in np.random.default_rng(1).permutation(len(ds)).tolist():
            _assert_same(ds[i], rows[i])
    assert sorted(opened) == sorted(ds.files)
    assert isinstance(ds[np.int64(7)]["id"], np.int64)
    assert isinstance(rows[0]["x"], np.float32) and isinstance(rows[0]["name"], bytes)


def test_negative_and_out_of_range_indexes(tmp_path: Path) -> None:
    ds = _table(tmp_path, 23, max_records=5)
    for i in range(23):
        assert int(ds[i - 23]["id"]) == i
    for bad in (23, -24, 2**70, -(2**70), np.int64(23), np.uint64(2**63)):
        with pytest.raises(IndexError, match="of 23"):
            ds[bad]
    empty = rf.open_dataset(ds.files, schema=ds.schema).shard(30, 400)
    assert len(empty) == 0
    with pytest.raises(IndexError, match="record 0 of 0"):
        empty[0]


def test_shards_of_records_and_of_files(tmp_path: Path) -> None:
    ds = _table(tmp_path, 61, max_records=10)
    for part in (ds.shard(2, 3), ds.shard(5, 9), ds.shard(0, 7), ds.shard(6, 7)):
        rows = list(part)
        assert len(part._rows()) == len(part) == len(rows)
        for i in range(-len(part), len(part)):
            _assert_same(part[i], rows[i])


def test_every_shape_gives_what_iteration_gives(tmp_path: Path) -> None:
    path = tmp_path / "shapes.tfrecord"
    with rf.TFRecordWriter(path) as w:
        for i in range(6):
            w.write(
                rf.encode_example(
                    {
                        "i": i,
                        "f": float(i),
                        "s": f"s{i}",
                        "v3": [i, i + 1, i + 2],
                        "m": [0.5 * i] * 4,
                        "tags": np.array([f"t{k}" for k in range(i % 3)], np.bytes_),
                        "pts": np.full(2 * (i % 3), i, np.float32),
                        "rag": np.arange(i),
                        "rag/row_lengths": [i // 2, i - i // 2],
                        "b2": [b"a", b"b"],
                    }
                )
            )
    schema = rf.Schema(
        {
            "i": rf.FeatureSpec(dtype="int64"),
            "f": rf.FeatureSpec(dtype="float32"),
            "s": rf.FeatureSpec(dtype="string"),
            "v3": rf.FeatureSpec(dtype="int64", shape=(3,)),
            "m": rf.FeatureSpec(dtype="float32", shape=(2, 2)),
            "tags": rf.FeatureSpec(dtype="string", shape=(None,)),
            "pts": rf.FeatureSpec(dtype="float32", shape=(None, 2)),
            "rag": rf.FeatureSpec(dtype="int64", shape=(None, None)),
            "b2": rf.FeatureSpec(dtype="string", shape=(2,)),
        }
    )
    ds = rf.open_dataset(str(path), schema=schema)
    rows = list(ds)
    for i in range(6):
        _assert_same(ds[i], rows[i])
    got = ds[4]
    assert got["m"].shape == (2, 2) and got["pts"].shape == (1, 2)
    assert got["b2"].dtype == object and got["b2"].tolist() == [b"a", b"b"]
    assert got["rag"].tolist() == [0, 1, 2, 3] and got["rag/row_lengths"].tolist() == [2, 2]
    assert ds.select(["s"])[5] == {"s": b"s5"}


def test_damage_raises_with_file_and_offset_and_the_next_reads_work(tmp_path: Path) -> None:
    ds = _table(tmp_path / "t", 40, max_records=20, index=True)
    path = ds.files[1]
    offsets = rf._core.RecordFile(path).offsets()
    data = bytearray(Path(path).read_bytes())
    data[int(offsets[4]) + 20] ^= 0x01  # payload of record 24: data CRC
    data[int(offsets[9]) + 2] ^= 0x01  # length of record 29: length CRC
    Path(path).write_bytes(bytes(data))
    for on_corrupt in ("raise", "skip"):
        ds = rf.open_dataset(tmp_path / "t", on_corrupt=on_corrupt)
        for i, k in ((24, 4), (29, 9), (-11, 9)):
            with pytest.raises(rf.CorruptRecordError) as e:
                ds[i]
            assert e.value.path == path and e.value.offset == int(offsets[k])
            assert int(ds[i + 1]["id"]) == (i + 1) % 40
        assert ds.skipped == []


def test_a_record_not_matching_the_schema_names_file_and_offset(tmp_path: Path) -> None:
    path = tmp_path / "x.tfrecord"
    with rf.TFRecordWriter(path) as w:
        w.write(rf.encode_example({"a": 1}))
        w.write(rf.encode_example({"a": [1, 2]}))
        w.write(rf.encode_example({"a": 3}))
    ds = rf.open_dataset(str(path), schema=rf.Schema({"a": rf.FeatureSpec(dtype="int64")}))
    second = 16 + len(rf.encode_example({"a": 1}))
    match = rf"x\.tfrecord: record at offset {second}: .*2 values"
    with pytest.raises(rf.SchemaError, match=match):
        ds[1]
    assert int(ds[2]["a"]) == 3 and int(ds[0]["a"]) == 1


def test_threads_reading_large_records_at_once(tmp_path: Path) -> None:
    # Records over 64 KiB are read with the GIL released: threads overlap in the decoder.
    n = 24
    blobs = [bytes([i]) * (70_000 + i) for i in range(n)]
    rf.write_dataset({"id": np.arange(n), "blob": blobs}, tmp_path, max_records=8)
    ds = rf.open_dataset(tmp_path)
    errors: list[BaseException] = []

    def read(seed: int) -> None:
        try:
            for i in np.random.default_rng(seed).integers(0, n, 200).tolist():
                row = ds[i]
                assert int(row["id"]) == i and row["blob"] == blobs[i]
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=read, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_scalars_keep_extreme_bit_patterns_and_behave_as_numpy_scalars(tmp_path: Path) -> None:
    # The RowReader writes NumPy scalars' values directly into objects it allocates:
    # every bit pattern must survive, and the objects must work like NumPy's own.
    ints = np.array([-(2**63), 2**63 - 1, 0, -1, 0x0123456789ABCDEF], dtype=np.int64)
    floats = np.array([np.nan, -0.0, np.inf, -3.4e38, 1.5e-45], dtype=np.float32)
    rf.write_dataset({"a": ints, "f": floats}, tmp_path, index=True)
    ds = rf.open_dataset(tmp_path)
    for i in range(len(ints)):
        row = ds[i]
        a, f = row["a"], row["f"]
        assert type(a) is np.int64 and type(f) is np.float32
        assert a == ints[i] and a.tobytes() == ints[i].tobytes()
        assert f.tobytes() == floats[i].tobytes()
        assert hash(a) == hash(ints[i]) and np.array([a]).dtype == np.int64
        assert (a + np.int64(0)) == ints[i]
        assert str(f) == str(floats[i])
