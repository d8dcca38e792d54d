"""rf.open_dataset: columnar batches, iteration, select, shuffle, shard, ds[i], corruption."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import recordforge as rf


def _dataset(tmp_path: Path, n: int = 50, **kwargs: Any) -> rf.Dataset:
    rng = np.random.default_rng(0)
    columns = {
        "id": np.arange(n),
        "xy": rng.random((n, 2), dtype=np.float32),
        "name": [f"row-{i}" for i in range(n)],
    }
    rf.write_dataset(columns, tmp_path / "ds", **kwargs)
    return rf.open_dataset(tmp_path / "ds")


def _decoded_files(ds: rf.Dataset) -> list[dict[str, Any]]:
    return [rf.decode_example(r) for f in ds.files for r in rf.read_records(f)]


def test_batches_equal_per_record_decoding(tmp_path: Path) -> None:
    ds = _dataset(tmp_path, max_records=7)
    assert len(ds) == 50 and len(ds.files) == 8
    expected = _decoded_files(ds)
    batches = list(ds.batches(16))
    assert [len(b["id"]) for b in batches] == [16, 16, 16, 2]
    assert len(list(ds.batches(16, drop_remainder=True))) == 3
    ids = np.concatenate([b["id"] for b in batches])
    assert ids.tolist() == [int(e["id"][0]) for e in expected]
    xy = np.concatenate([b["xy"] for b in batches])
    assert xy.shape == (50, 2) and xy.dtype == np.float32
    assert xy.tolist() == [e["xy"].tolist() for e in expected]
    assert [r["name"] for r in ds] == [e["name"][0] for e in expected]
    only = next(ds.select(["name"]).batches(3))
    assert list(only) == ["name"] and only["name"].tolist() == [b"row-0", b"row-1", b"row-2"]


def test_tiny_coco_per_image_batches_match_records(shared_data: Path, tmp_path: Path) -> None:
    from recordforge.sources.coco import CocoSource

    coco = shared_data / "tiny_coco"
    src = CocoSource.from_files(
        coco / "annotations" / "instances_val2017.json", coco / "val2017", per="image"
    )
    rf.write_dataset(
        src.items(), tmp_path / "c", to_records=src.to_records, schema=src.schema(), max_records=16
    )
    ds = rf.open_dataset(tmp_path / "c")
    expected = _decoded_files(ds)
    rows = list(ds)
    assert len(rows) == len(expected) == 50
    for row, exp in zip(rows, expected, strict=True):
        for name, value in exp.items():
            got = row[name]
            if isinstance(value, list):
                got = [got] if isinstance(got, bytes) else list(got)
                assert got == value, name
            else:
                assert np.asarray(got).ravel().tolist() == value.tolist(), name


def test_shards_with_workers_and_ranks_cover_every_record_once(tmp_path: Path) -> None:
    for max_records in (3, 40):  # many files (file-level) and 2 files (record-level)
        ds = _dataset(tmp_path / str(max_records), max_records=max_records)
        seen: collections.Counter[int] = collections.Counter()
        for rank in range(2):
            for worker in range(2):
                part = ds.shard(rank * 2 + worker, 4)
                ids = [int(r["id"]) for r in part]
                assert len(ids) == len(part)
                seen.update(ids)
        assert seen == collections.Counter(range(50))


def test_shuffle_is_reproducible_from_the_seed(tmp_path: Path) -> None:
    ds = _dataset(tmp_path, max_records=5)

    def order(d: rf.Dataset) -> list[int]:
        return [int(r["id"]) for r in d]

    a, b = ds.shuffle(16, seed=1), ds.shuffle(16, seed=1)
    first = order(a)
    assert sorted(first) == list(range(50)) and first != list(range(50))
    assert first == order(b)
    assert order(a) == order(b)  # epoch 2 of both: the same again...
    assert order(a) != first or order(ds.shuffle(16, seed=1)) == first  # ...and new per epoch
    assert order(ds.shuffle(16, seed=2)) != first


def test_random_access_equals_sequential_read(tmp_path: Path) -> None:
    for index in (True, False):
        ds = _dataset(tmp_path / str(index), max_records=9, index=index)
        sequential = list(ds)
        for i in range(len(ds)):
            got = ds[i]
            assert int(got["id"]) == int(sequential[i]["id"])
            assert got["name"] == sequential[i]["name"]
            assert got["xy"].tolist() == sequential[i]["xy"].tolist()
        assert int(ds[-1]["id"]) == 49
        with pytest.raises(IndexError):
            ds[50]
        part = ds.shard(1, 3)
        assert [int(part[i]["id"]) for i in range(len(part))] == [int(r["id"]) for r in part]


def test_corrupt_record_raises_or_is_skipped(tmp_path: Path) -> None:
    ds = _dataset(tmp_path, max_records=50)
    (path,) = ds.files
    offsets = rf._core.RecordFile(path).offsets()
    data = bytearray(Path(path).read_bytes())
    data[int(offsets[20]) + 14] ^= 0xFF  # a payload byte of record 20
    Path(path).write_bytes(bytes(data))
    with pytest.raises(rf.CorruptRecordError) as e:
        list(rf.open_dataset(tmp_path / "ds"))
    assert e.value.path == path and e.value.offset == int(offsets[20])
    skipping = rf.open_dataset(tmp_path / "ds", on_corrupt="skip")
    ids = [int(r["id"]) for r in skipping]
    assert ids == [i for i in range(50) if i != 20]
    assert [(s["start"], s["end"]) for s in skipping.skipped] == [
        (int(offsets[20]), int(offsets[21]))
    ]
    # A zeroed block across records 30-32 (length fields too): resynchronised after it.
    data[int(offsets[30]) : int(offsets[33])] = bytes(int(offsets[33]) - int(offsets[30]))
    Path(path).write_bytes(bytes(data))
    skipping = rf.open_dataset(tmp_path / "ds", on_corrupt="skip")
    assert [int(r["id"]) for r in skipping] == [i for i in range(50) if i not in (20, 30, 31, 32)]


def test_foreign_files_and_globs(shared_data: Path) -> None:
    taxi = shared_data / "tfx_chicago_taxi"
    files = sorted(str(p) for p in taxi.rglob("*.gz"))
    if not files:
        pytest.skip("no TFX shards")
    ds = rf.open_dataset(files)
    assert len(ds) == sum(sum(1 for _ in rf.read_records(f)) for f in files)
    first = next(iter(ds))
    assert set(first) == set(ds.schema)
    tf = pytest.importorskip("tensorflow")
    records = [r for f in files[:1] for r in rf.read_records(f)][:64]
    parsed = tf.io.parse_example(tf.constant(records), ds.schema.to_tf_feature_description())
    ours = next(ds.batches(64))
    for name, spec in ds.schema.items():
        theirs = parsed[name]
        if spec.fixed:
            assert np.asarray(ours[name]).tolist() == theirs.numpy().tolist(), name
        else:
            dense = tf.sparse.to_dense(theirs) if hasattr(theirs, "indices") else theirs
            lengths = ours[name].row_lengths().tolist()
            got = [list(ours[name][i]) for i in range(64)]
            want = [dense.numpy()[i][: lengths[i]].tolist() for i in range(64)]
            assert got == want, name


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_inferred_schema_counts_every_record(tmp_path: Path, compression: str | None) -> None:
    """With ``infer="all"``, lengths that change after the first 1,000 records make a
    feature variable-length (read in Rust from the memory map for plain files, by the
    columnar reader for compressed ones); a feature that never changes stays fixed."""

    def row(i: int) -> dict[str, Any]:
        r: dict[str, Any] = {"fixed": [i, i, i], "scalar": float(i), "tag": b"t"}
        if i != 1500:
            r["sometimes"] = i  # missing once, late
        r["grows"] = list(range(1 if i < 1800 else 2))
        return r

    paths = []
    for k in range(2):
        path = tmp_path / f"part-{k}.tfrecord"
        with rf.TFRecordWriter(path, compression) as w:
            w.write_many([rf.encode_example(row(i)) for i in range(k * 1000, k * 1000 + 1000)])
        paths.append(path)
    ds = rf.open_dataset(tmp_path / "part-*.tfrecord", infer="all")
    assert ds.sampled is None
    assert {n: (s.dtype, s.shape) for n, s in ds.schema.items()} == {
        "fixed": ("int64", (3,)),
        "scalar": ("float32", ()),
        "tag": ("bytes", ()),
        "sometimes": ("int64", (None,)),
        "grows": ("int64", (None,)),
    }
    assert ds.schema == rf.infer_schema(
        rf.decode_example(r) for p in paths for r in rf.read_records(p)
    )
    rows = [r for b in ds.batches(512) for r in _rows(b)]
    assert len(rows) == 2000
    assert list(rows[1500]["sometimes"]) == [] and list(rows[1501]["sometimes"]) == [1501]
    assert list(rows[1999]["grows"]) == [0, 1]


def _late_changes(tmp_path: Path, compression: str | None) -> list[Path]:
    """Two files of 1,000 records; record 1500 (the second file's 500th) lacks
    ``sometimes``, and from record 1800 ``grows`` holds two values."""
    paths = []
    for k in range(2):
        path = tmp_path / f"part-{k}.tfrecord"
        with rf.TFRecordWriter(path, compression) as w:
            for i in range(k * 1000, k * 1000 + 1000):
                r: dict[str, Any] = {"fixed": [i, i, i], "grows": list(range(1 + (i >= 1800)))}
                if i != 1500:
                    r["sometimes"] = i
                w.write(rf.encode_example(r))
        paths.append(path)
    return paths


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_sampled_schema_refuses_a_later_record_that_disagrees(
    tmp_path: Path, compression: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A schema from a sample (here the first 1,000 records; by default the first 16 MiB,
    whatever their number): the features that change later are fixed in it, and the
    first record that disagrees stops the read with a SchemaError naming its file and
    record; no record after it and none of its batch is given out as if it were fine."""
    import recordforge.dataset

    monkeypatch.setattr(recordforge.dataset, "SAMPLE_RECORDS", 1000)
    paths = _late_changes(tmp_path, compression)
    ds = rf.open_dataset(tmp_path / "part-*.tfrecord")
    assert ds.sampled == 1000
    assert {n: s.shape for n, s in ds.schema.items()} == {
        "fixed": (3,),
        "grows": (),
        "sometimes": (),
    }
    got: list[int] = []
    batches = ds.batches(100)
    with pytest.raises(rf.SchemaError) as e:
        for b in batches:
            got.extend(b["fixed"][:, 0].tolist())
    assert got == list(range(1500))
    message = str(e.value)
    assert str(paths[1]) in message and "record 500 " in message
    assert '"sometimes" has 0 values, the schema says 1' in message
    assert "inferred from the first 1000 records" in message
    with pytest.raises(rf.SchemaError):  # and again: the error sticks
        next(batches)
    if compression is None:  # random access checks the record it reads
        assert int(ds[1499]["sometimes"]) == 1499
        with pytest.raises(rf.SchemaError, match=r"part-1.*the schema says 1"):
            ds[1500]
        with pytest.raises(rf.SchemaError, match="the schema says 1"):
            ds.take([0, 1500])
    # Every record read one at a time stops at the same place.
    with pytest.raises(rf.SchemaError, match="record 500 "):
        for _ in ds:
            pass
    # With the whole files counted, or a schema given, nothing disagrees.
    assert len(list(rf.open_dataset(paths, infer="all").batches(512))) == 4
    assert ds.select(["fixed"]).sampled == 1000
    assert len(list(ds.select(["fixed"]).batches(512))) == 4


def test_sampled_schema_of_few_records_is_exact(tmp_path: Path) -> None:
    """Files that hold fewer records than the sample are all sampled: the schema is what
    a full pass infers, and ``sampled`` says nothing is left unchecked."""
    path = tmp_path / "few.tfrecord"
    with rf.TFRecordWriter(path) as w:
        for i in range(10):
            w.write(rf.encode_example({"a": list(range(1 + (i == 9))), "b": b"x"}))
    ds = rf.open_dataset(path)
    assert ds.sampled is None
    assert ds.schema == rf.open_dataset(path, infer="all").schema
    assert ds.schema["a"].shape == (None,) and ds.schema["b"].shape == ()
    with pytest.raises(ValueError, match="infer must be"):
        rf.open_dataset(path, infer="some")  # type: ignore[arg-type]


def test_sampled_schema_of_large_records_stops_at_its_byte_budget(tmp_path: Path) -> None:
    """Large records are sampled by bytes (16 MiB), not 1,000 of them: the open reads a
    few dozen, and a record after them that disagrees is found when read."""
    path = tmp_path / "big.tfrecord"
    blob = b"\xff" * 600_000
    with rf.TFRecordWriter(path) as w:
        for i in range(60):
            w.write(rf.encode_example({"image": blob, "label": [i] * (1 if i < 59 else 2)}))
    ds = rf.open_dataset(path)
    assert ds.sampled is not None and 20 <= ds.sampled <= 40
    assert ds.schema["label"].shape == ()
    with pytest.raises(rf.SchemaError, match="record 59 "):
        list(ds.batches(8))
    assert rf.open_dataset(path, infer="all").schema["label"].shape == (None,)


def _rows(batch: dict[str, Any]) -> list[dict[str, Any]]:
    n = len(next(iter(batch.values())))
    return [{name: column[i] for name, column in batch.items()} for i in range(n)]


def test_inferred_schema_refuses_mixed_kinds(tmp_path: Path) -> None:
    path = tmp_path / "mixed.tfrecord"
    with rf.TFRecordWriter(path) as w:
        w.write_many([rf.encode_example({"x": 1.5 if i == 1200 else i}) for i in range(1300)])
    with pytest.raises(rf.SchemaError, match="'x' holds float32 and int64 values"):
        rf.open_dataset(path, infer="all")
    # Within the default sample (16 MiB): at open.
    with pytest.raises(rf.SchemaError, match=r"record 1200 .*int64 in one record"):
        rf.open_dataset(path)
    # From a sample of 1,000 records: past it, when the record is read.
    import recordforge.dataset

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(recordforge.dataset, "SAMPLE_RECORDS", 1000)
        ds = rf.open_dataset(path)
    with pytest.raises(rf.SchemaError, match=r"record 1200 .*float_list, the schema says int64"):
        list(ds.batches(256))
    # Within it: at open, naming the record.
    with rf.TFRecordWriter(path) as w:
        w.write_many([rf.encode_example({"x": 1.5 if i == 12 else i}) for i in range(20)])
    with pytest.raises(rf.SchemaError, match=r"mixed.tfrecord: record 12 .*int64 in one record"):
        rf.open_dataset(path)


def test_decode_batch_errors_name_the_record() -> None:
    records = [rf.encode_example({"a": 1}), rf.encode_example({"a": 1.5})]
    with pytest.raises(rf.SchemaError, match=r"record 1.*float_list"):
        rf.decode_batch(records, [("a", "int64", 1)])
    with pytest.raises(rf.SchemaError, match=r"record 0.*has 0 values"):
        rf.decode_batch([rf.encode_example({})], [("a", "int64", 1)])
    # Bytes that are no Example are a DecodeError, not a SchemaError.
    with pytest.raises(rf.DecodeError, match=r"record 1: cannot decode") as e:
        rf.decode_batch([rf.encode_example({"a": 1}), b"\x0a\x05\x01"], [("a", "int64", 1)])
    assert not isinstance(e.value, rf.SchemaError)


def test_file_url_reads_as_the_local_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A file:// URL names a local path: the same records, by the local (Rust) readers.
    plain = _dataset(tmp_path, n=30, max_records=8)
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in plain.files:
        (bare / Path(f).name).write_bytes(Path(f).read_bytes())
    expected = [int(r["id"]) for r in plain]
    from recordforge import _fs

    def no_fsspec(url: str) -> Any:
        raise AssertionError(f"{url} went through fsspec")

    monkeypatch.setattr(_fs, "filesystem", no_fsspec)
    for path in (tmp_path / "ds", bare):
        ds = rf.open_dataset(f"file://{path.resolve()}")
        assert all(not f.startswith("file:") for f in ds.files)
        assert [int(r["id"]) for r in ds] == expected
        assert [int(ds[i]["id"]) for i in range(len(ds))] == expected
    listed = rf.open_dataset([f"file://{Path(f).resolve()}" for f in plain.files])
    assert [int(r["id"]) for r in listed] == expected
