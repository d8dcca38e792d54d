"""Issue 13, hostile and damaged input read through ``rf.open_dataset``: memory held by
dropped datasets, compression detected from the bytes, damaged bare files with
``on_corrupt="skip"``, lists of dataset directories and Grain batches of ragged
features."""

from __future__ import annotations

import gc
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import FUZZ_DIR, load_fuzz_target

import recordforge as rf


def _maps_of(name: str) -> int:
    with open("/proc/self/maps") as f:
        return sum(1 for line in f if line.rstrip().endswith(name))


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        line = next(x for x in f if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


# --------------------------------------------------------------------------------------
# Item 2: a Dataset on which ds[i] was called is freed (no reference cycle)


def test_dropped_dataset_frees_its_memory_maps_without_gc(tmp_path: Path) -> None:
    rows = {"id": np.arange(400), "x": np.ones((400, 600), np.float32)}  # ~1 MB shard
    rf.write_dataset(rows, tmp_path, max_records=1000)
    (shard,) = [p.name for p in tmp_path.glob("*.tfrecord")]
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()  # freed by reference counting alone, not by the cycle collector
    try:
        ds = rf.open_dataset(tmp_path)
        assert int(ds[3]["id"]) == 3
        assert _maps_of(shard) == 1
        del ds
        assert _maps_of(shard) == 0
        before = _rss_mb()
        for _ in range(200):
            ds = rf.open_dataset(tmp_path)
            ds[3]
            ds[-1]
            del ds
        assert _maps_of(shard) == 0
        # With the cycle every round kept its map (its pages resident): ~200 MB here.
        assert _rss_mb() - before < 40
    finally:
        if enabled:
            gc.enable()


def test_row_reader_of_a_dropped_dataset_says_so(tmp_path: Path) -> None:
    rf.write_dataset({"id": np.arange(10)}, tmp_path, max_records=4)
    ds = rf.open_dataset(tmp_path)
    rows = ds._rows()
    del ds
    try:
        rows[7]
    except ReferenceError as e:
        assert "dataset" in str(e)
    else:  # pragma: no cover - the file of record 7 was not loaded yet
        raise AssertionError("a row reader outlived its dataset")


# --------------------------------------------------------------------------------------
# Item 3: compression comes from the bytes, not from the file name


def _gzip_shard(tmp_path: Path, compression: str = "gzip") -> Path:
    out = tmp_path / f"src-{compression}"
    rf.write_dataset({"id": np.arange(10)}, out, compression=compression)
    (shard,) = [p for p in out.iterdir() if p.name != "dataset.json"]
    return shard


@pytest.mark.parametrize(
    ("compression", "name"),
    [("gzip", "a.tfrecord"), ("gzip", "a.gzip"), ("zlib", "a.gz"), ("gzip", "a.zlib")],
)
def test_compression_is_detected_from_the_bytes(
    tmp_path: Path, compression: str, name: str
) -> None:
    (tmp_path / "in").mkdir()
    path = tmp_path / "in" / name
    shutil.copy(_gzip_shard(tmp_path, compression), path)
    for given in (path, [path], tmp_path / "in" / "*"):
        ds = rf.open_dataset(str(given) if not isinstance(given, list) else given)
        assert ds.compression == compression
        assert [int(r["id"]) for r in ds] == list(range(10))
    with pytest.raises(TypeError, match=rf"{path}: random access .* {compression}-compressed"):
        ds[5]
    assert rf.inspect.detect_compression(path) == compression


def test_tf_dataset_of_a_misnamed_gzip_file(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    path = tmp_path / "a.tfrecord"
    shutil.copy(_gzip_shard(tmp_path), path)
    batches = list(rf.open_dataset(path).to_tf_dataset(batch_size=4))
    assert np.concatenate([b["id"].numpy() for b in batches]).tolist() == list(range(10))


def test_plain_file_named_gz_is_plain(tmp_path: Path) -> None:
    rf.write_dataset({"id": np.arange(10)}, tmp_path / "src")
    path = tmp_path / "a.tfrecord.gz"
    shutil.copy(next((tmp_path / "src").glob("*.tfrecord")), path)
    ds = rf.open_dataset(path)
    assert ds.compression is None and int(ds[5]["id"]) == 5


def test_files_of_two_compressions(tmp_path: Path) -> None:
    rf.write_dataset({"id": np.arange(10)}, tmp_path / "src")
    plain = tmp_path / "p.tfrecord"
    shutil.copy(next((tmp_path / "src").glob("*.tfrecord")), plain)
    gz = tmp_path / "g.tfrecord"
    shutil.copy(_gzip_shard(tmp_path), gz)
    ds = rf.open_dataset([plain, gz])
    assert len(list(ds.batches(3))) == 7  # each file read with its own compression
    with pytest.raises(ValueError, match=rf"mix compressions: {plain} is not compressed, {gz}"):
        _ = ds.compression


# --------------------------------------------------------------------------------------
# Item 5: on_corrupt="skip" also skips damaged records while inferring the schema


def _damaged(tmp_path: Path, where: str) -> tuple[Path, int]:
    """A bare file of 20 records with record 0 (``where="first"``) or records 0-1
    (``"header"``: a length field broken) damaged; and the intact records' count."""
    out = tmp_path / "src"
    rf.write_dataset({"id": np.arange(20), "x": np.ones((20, 3), np.float32)}, out)
    data = bytearray(next(out.glob("*.tfrecord")).read_bytes())
    size = len(data) // 20
    if where == "first":
        data[14] ^= 1  # record 0's payload: a data CRC mismatch
        intact = 19
    else:
        data[1] ^= 0x40  # record 0's length: the walk resynchronises at record 1
        data[size + 20] ^= 1  # record 1's payload
        intact = 18
    path = tmp_path / "damaged.tfrecord"
    path.write_bytes(bytes(data))
    return path, intact


@pytest.mark.parametrize("where", ["first", "header"])
def test_skip_infers_the_schema_past_damage(tmp_path: Path, where: str) -> None:
    path, intact = _damaged(tmp_path, where)
    with pytest.raises(rf.CorruptRecordError, match=str(path)):
        rf.open_dataset(path)
    ds = rf.open_dataset(path, on_corrupt="skip")
    assert dict(ds.schema) == {
        "id": rf.FeatureSpec(dtype="int64"),
        "x": rf.FeatureSpec(dtype="float32", shape=(3,)),
    }
    ids = np.concatenate([b["id"] for b in ds.batches(8)]).tolist()
    assert ids == list(range(20 - intact, 20))
    assert ds.skipped and all(s["file"] == str(path) for s in ds.skipped)


def test_skip_infers_the_schema_of_a_damaged_compressed_file(tmp_path: Path) -> None:
    good = _gzip_shard(tmp_path)
    data = good.read_bytes()
    path = tmp_path / "cut.tfrecord.gz"
    path.write_bytes(data[: len(data) // 2])  # a truncated GZIP stream
    with pytest.raises(rf.CorruptRecordError):
        rf.open_dataset(path)
    ds = rf.open_dataset(path, on_corrupt="skip")
    assert dict(ds.schema) == {"id": rf.FeatureSpec(dtype="int64")}


# --------------------------------------------------------------------------------------
# Item 17: lists of dataset directories; Grain batches of ragged features


def test_list_of_dataset_directories(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    rf.write_dataset({"id": np.arange(10)}, a, max_records=4, index=True)
    rf.write_dataset({"id": np.arange(10, 25)}, b, max_records=4)
    ds = rf.open_dataset([a, str(b)])
    assert len(ds) == 25 and len(ds.files) == 7
    assert [int(r["id"]) for r in ds] == list(range(25))
    assert [int(ds[i]["id"]) for i in (0, 9, 10, 24, -1)] == [0, 9, 10, 24, 24]
    # A bare directory and a glob may be listed too.
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in b.glob("*.tfrecord"):
        shutil.copy(f, bare / f.name)
    ds = rf.open_dataset([a, bare, str(b / "*-00000-*.tfrecord")])
    assert [int(r["id"]) for r in ds] == [*range(10), *range(10, 25), *range(10, 14)]


def test_list_of_directories_with_different_schemas(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    rf.write_dataset({"id": np.arange(10), "x": np.ones(10)}, a)
    rf.write_dataset({"id": np.arange(10), "y": np.ones(10)}, b)
    with pytest.raises(rf.SchemaError) as e:
        rf.open_dataset([a, b])
    assert str(e.value).startswith(f"{b}: its schema differs from {a}'s in 2 feature(s): ")
    assert "'x' (float32 () vs absent)" in str(e.value)
    assert "'y' (absent vs float32 ())" in str(e.value)


def test_list_naming_nothing(tmp_path: Path) -> None:
    rf.write_dataset({"id": np.arange(3)}, tmp_path / "a")
    with pytest.raises(FileNotFoundError, match=r"nothing\.tfrecord: no such file \(a list"):
        rf.open_dataset([tmp_path / "nothing.tfrecord"])


@pytest.fixture(scope="module")
def coco_per_image(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from recordforge.sources.coco import CocoSource

    root = shared_data / "tiny_coco"
    source = CocoSource.from_files(
        root / "annotations" / "instances_val2017.json", root / "val2017"
    )
    out = tmp_path_factory.mktemp("coco") / "per_image"
    rf.write_dataset(
        source.items(), out, to_records=source.to_records, schema=source.schema(), max_records=16
    )
    return out


def test_grain_batches_per_image_coco(coco_per_image: Path) -> None:
    grain = pytest.importorskip("grain")
    from recordforge.dataset import Ragged

    ds = rf.open_dataset(coco_per_image)
    source = ds.to_grain()
    # The README's line, with the batch function for ragged features.
    shuffled = grain.MapDataset.source(source).shuffle(seed=0).batch(32, batch_fn=source.collate)
    got = list(shuffled)
    assert [len(b["image/height"]) for b in got] == [32, 18]
    assert sorted(np.concatenate([b["image/object/id"].values for b in got]).tolist()) == sorted(
        np.concatenate([b["image/object/id"].values for b in ds.batches(50)]).tolist()
    )
    # In order, the batches are those of ds.batches, feature for feature.
    ordered = grain.MapDataset.source(source).batch(16, batch_fn=source.collate)
    for mine, theirs in zip(ordered, ds.batches(16), strict=True):
        assert list(mine) == list(theirs)
        for name, column in theirs.items():
            if isinstance(column, Ragged):
                assert isinstance(mine[name], Ragged), name
                assert np.array_equal(mine[name].row_splits, column.row_splits), name
                assert np.array_equal(np.asarray(mine[name].values), np.asarray(column.values)), (
                    name
                )
            else:
                assert np.array_equal(mine[name], column), name
    # Padded, with lengths.
    import functools

    padded = grain.MapDataset.source(source).batch(
        8, batch_fn=functools.partial(source.collate, pad=True)
    )
    first = next(iter(padded))
    lengths = first["image/object/bbox/xmin/lengths"]
    assert first["image/object/bbox/xmin"].shape == (8, lengths.max())
    assert lengths.tolist() == [len(source[i]["image/object/bbox/xmin"]) for i in range(8)]
    assert first["image/encoded"].dtype == object and len(first["image/encoded"]) == 8


# --------------------------------------------------------------------------------------
# The dataset fuzz target (fuzz/fuzz_dataset.py), replayed without atheris


def test_iterating_records_without_features(tmp_path: Path) -> None:
    path = tmp_path / "empty.tfrecord"
    with rf.TFRecordWriter(str(path)) as w:
        w.write_many([b"", b"\n\x00", rf.encode_example({})])
    ds = rf.open_dataset(path)
    assert len(ds.schema) == 0 and len(ds) == 3
    assert list(ds) == [{}, {}, {}]


def test_dataset_fuzz_target_on_its_seeds_and_mutations(
    shared_data: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import random

    monkeypatch.setenv("RF_FUZZ_TMP", str(tmp_path))
    fd = load_fuzz_target("fuzz_dataset")
    golden = sorted((shared_data / "tfrecord_vectors" / "pytorch_data").glob("*.tfrecord"))
    regressions = sorted((FUZZ_DIR / "regressions").glob("dataset-*"))
    try:
        seeds = fd.seeds(golden)
        for data in [*seeds, *(p.read_bytes() for p in regressions)]:
            fd.check(data)
        rng = random.Random(13)
        for _ in range(300):  # byte-level damage, fixed seed
            data = bytearray(rng.choice(seeds))
            for _ in range(rng.randrange(1, 4)):
                op = rng.randrange(3)
                if op == 0 and len(data) > 1:
                    data[rng.randrange(1, len(data))] ^= 1 << rng.randrange(8)
                elif op == 1 and len(data) > 1:
                    del data[rng.randrange(1, len(data)) :]
                else:
                    at = rng.randrange(1, len(data) + 1)
                    data[at:at] = rng.randbytes(rng.randrange(1, 9))
            fd.check(bytes(data))
    finally:
        fd.cleanup()


def _framed(records: list[bytes]) -> bytearray:
    return bytearray(rf._core.frame_records(records))


@pytest.mark.parametrize("where", ["sampled", "past the sample"])
@pytest.mark.parametrize("damage", ["data crc", "length crc", "truncated", "lying length"])
def test_a_damaged_record_is_named_whether_sampled_or_not(
    tmp_path: Path, where: str, damage: str
) -> None:
    """A damaged record inside the sample stops the open, one past it the read that
    reaches it: both a CorruptRecordError naming the file and the record's offset, and a
    length that claims more than max_record_bytes is refused before it is allocated.
    With on_corrupt="skip" the intact records are all read."""
    records = [rf.encode_example({"x": [i, i], "blob": b"b" * 100}) for i in range(1200)]
    bad = 5 if where == "sampled" else 1100
    data = _framed(records)
    offset = sum(16 + len(r) for r in records[:bad])
    if damage == "data crc":
        data[offset + 20] ^= 1
    elif damage == "length crc":
        data[offset + 8] ^= 1
    elif damage == "lying length":  # 2**40 bytes, its CRC made right
        length = (1 << 40).to_bytes(8, "little")
        data[offset : offset + 12] = length + rf.masked_crc32c(length).to_bytes(4, "little")
    else:
        data = data[: offset + 30]
    path = tmp_path / "d.tfrecord"
    path.write_bytes(bytes(data))
    with pytest.raises(rf.CorruptRecordError) as e:
        list(rf.open_dataset(path, max_record_bytes=1 << 20).batches(64))
    assert e.value.path.endswith("d.tfrecord") and e.value.offset == offset, str(e.value)
    if damage == "lying length":
        assert "more than the limit" in str(e.value)
    ds = rf.open_dataset(path, on_corrupt="skip", max_record_bytes=1 << 20)
    assert ds.schema["x"].shape == (2,)
    got = [int(v) for b in ds.batches(256) for v in b["x"][:, 0]]
    assert bad not in got and len(got) >= (bad if damage == "truncated" else 1199) - 1
    assert ds.skipped and ds.skipped[0]["file"].endswith("d.tfrecord")


def test_records_that_are_not_examples_in_the_sample_are_named(tmp_path: Path) -> None:
    path = tmp_path / "junk.tfrecord"
    path.write_bytes(bytes(_framed([rf.encode_example({"a": 1}), b"\xff\xff\xff"])))
    with pytest.raises(rf.DecodeError, match=r"junk.tfrecord: record 1 \(at offset \d+\)"):
        rf.open_dataset(path)
