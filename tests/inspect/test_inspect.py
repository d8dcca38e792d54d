"""recordforge.inspect: count, verify, index, salvage, info, head, stats and preview on a
dataset made by our COCO conversion, on TFRecord files others wrote (TFX GZIP shards,
pytorch/data Example + SequenceExample, Object Detection API, TF-Ranking ELWC), and on
damaged copies (bit flip, truncation, a zeroed 4 KB block)."""

from __future__ import annotations

import doctest
import gzip
import hashlib
import importlib
import importlib.util
import json
import pkgutil
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import google_crc32c
import numpy as np
import pytest

import recordforge as rf
from recordforge import inspect
from recordforge.sources.coco import CocoSource

# --------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="session")
def coco(tiny: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny COCO converted per image (OD-API keys, captions) into 4 shards with indexes."""
    source = CocoSource.from_files(tiny["annotations"], tiny["images"], captions=tiny["captions"])
    out = tmp_path_factory.mktemp("coco") / "dataset"
    rf.write_dataset(
        source.items(),
        out,
        to_records=source.to_records,
        schema=source.schema(),
        source=source.describe(),
        report=source.report(),
        max_records=16,
        index=True,
    )
    return out


@pytest.fixture(scope="session")
def coco_shard(coco: Path) -> tuple[Path, list[bytes], list[int]]:
    """The first shard: path, its records and their offsets."""
    manifest = rf.Manifest.load(coco)
    path = coco / manifest.splits["train"][0].file
    records, offsets = spans_of(path)
    return path, records, offsets


@pytest.fixture(scope="session")
def taxi(shared_data: Path) -> Path:
    return shared_data / "tfx_chicago_taxi" / "tfrecord_gzip"


def spans_of(path: Path) -> tuple[list[bytes], list[int]]:
    it = rf.read_records(path)
    records, offsets = [], []
    for r in it:
        records.append(r)
        offsets.append(it.offset)  # type: ignore[attr-defined]
    return records, offsets


def damage(src: Path, dst: Path, kind: str, at: int) -> Path:
    """A copy of ``src`` with a bit flipped at ``at``, cut at ``at``, or 4096 bytes zeroed
    from ``at``."""
    data = bytearray(src.read_bytes())
    if kind == "flip":
        data[at] ^= 0x10
    elif kind == "truncate":
        del data[at:]
    elif kind == "zero":
        data[at : at + 4096] = bytes(4096)
    dst.write_bytes(bytes(data))
    return dst


def small_records_file(path: Path, n: int = 1000) -> list[bytes]:
    rng = np.random.default_rng(1)
    records = [
        rf.encode_example({"i": i, "pad": rng.bytes(int(rng.integers(50, 300)))}) for i in range(n)
    ]
    with rf.TFRecordWriter(path) as w:
        w.write_many(records)
    return records


def test_docstring_examples() -> None:
    # testmod only looks at what a module defines itself, so every module of the package.
    names = [m.name for m in pkgutil.iter_modules(inspect.__path__, f"{inspect.__name__}.")]
    modules = [inspect, *(importlib.import_module(n) for n in names)]
    results = [doctest.testmod(m, optionflags=doctest.ELLIPSIS) for m in modules]
    assert sum(r.attempted for r in results) > 20
    assert sum(r.failed for r in results) == 0


# --------------------------------------------------------------------------------------
# Inputs


def test_resolve_dataset_dir_files_and_globs(coco: Path, vectors: Path, taxi: Path) -> None:
    items = inspect.resolve(coco)
    assert [i.path.name for i in items] == [f"train-0000{k}-of-00004.tfrecord" for k in range(4)]
    assert all(i.split == "train" and i.shard is not None for i in items)
    # A shard named on its own still carries its dataset.json entry.
    (single,) = inspect.resolve(items[1].path)
    assert single.shard == items[1].shard
    globbed = inspect.resolve(str(vectors / "pytorch_data" / "*.tfrecord"))
    assert [i.path.name for i in globbed] == ["example.tfrecord", "sequence_example.tfrecord"]
    assert len(inspect.resolve(taxi)) == 2
    with pytest.raises(FileNotFoundError, match="matches no files"):
        inspect.resolve(str(vectors / "*.nothing"))
    with pytest.raises(FileNotFoundError, match="no such file"):
        inspect.resolve(vectors / "missing.tfrecord")


def test_detect_compression(taxi: Path, coco_shard: Any, tmp_path: Path) -> None:
    assert inspect.detect_compression(next(taxi.iterdir())) == "gzip"
    assert inspect.detect_compression(coco_shard[0]) is None
    with rf.TFRecordWriter(tmp_path / "z", compression="zlib") as w:
        w.write(b"abc")
    assert inspect.detect_compression(tmp_path / "z") == "zlib"


# --------------------------------------------------------------------------------------
# count


def test_count_everything_against_tensorflow(coco: Path, vectors: Path, taxi: Path) -> None:
    tf = pytest.importorskip("tensorflow")
    for paths in (
        coco,
        taxi,
        vectors / "pytorch_data",
        vectors / "tf_ranking",
        vectors / "datumaro_tf_od_api",
    ):
        files = [str(i.path) for i in inspect.resolve(paths)]
        compression = "GZIP" if paths == taxi else ""
        expected = sum(1 for _ in tf.data.TFRecordDataset(files, compression_type=compression))
        for kwargs in ({}, {"scan": True}, {"verify": True}):
            result = inspect.count(paths, **kwargs)
            assert result.ok and result.records == expected, (paths, kwargs)
    assert inspect.count(taxi).records == 15_000


def test_count_says_where_the_count_came_from(coco: Path, tmp_path: Path) -> None:
    assert {f.method for f in inspect.count(coco).files} == {"manifest"}
    assert {f.method for f in inspect.count(coco, scan=True).files} == {"scan"}
    assert {f.method for f in inspect.count(coco, verify=True).files} == {"scan+crc"}
    # Without dataset.json beside it, a shard with its .idx is counted from the index...
    shard = next(coco.glob("*-00000-of-*.tfrecord"))
    shutil.copy(shard, tmp_path / shard.name)
    shutil.copy(f"{shard}.idx", tmp_path / f"{shard.name}.idx")
    assert inspect.count(tmp_path / shard.name).files[0].method == "index"
    # ... unless the index no longer covers the file exactly.
    with open(tmp_path / shard.name, "ab") as f:
        f.write(b"x")
    result = inspect.count(tmp_path / shard.name)
    assert result.files[0].method == "scan"
    assert not result.ok and result.problems[0].kind == "truncated"


def test_count_damaged(coco_shard: Any, tmp_path: Path) -> None:
    path, records, offsets = coco_shard
    flipped = damage(path, tmp_path / "flip.tfrecord", "flip", offsets[5] + 1000)
    # A payload bit flip leaves the framing intact: the count is the true count...
    result = inspect.count(flipped)
    assert result.ok and result.records == len(records)
    # ... and --verify finds the CRC mismatch, naming record and offset.
    result = inspect.count(flipped, verify=True)
    assert result.records == len(records)
    assert [(p.kind, p.record, p.offset) for p in result.problems] == [("crc", 5, offsets[5])]
    cut = damage(path, tmp_path / "cut.tfrecord", "truncate", offsets[10] + 100)
    result = inspect.count(cut)
    assert result.records == 10
    assert [(p.kind, p.record, p.offset) for p in result.problems] == [
        ("truncated", 10, offsets[10])
    ]


# --------------------------------------------------------------------------------------
# verify


def test_verify_clean_inputs(coco: Path, vectors: Path, taxi: Path) -> None:
    result = inspect.verify(coco, images=True)
    assert result.ok, result.problems
    assert result.records == 50
    assert "images" in result.checked and any("checksums" in c for c in result.checked)
    kinds = {}
    for paths in (
        taxi,
        vectors / "pytorch_data",
        vectors / "tf_ranking",
        vectors / "datumaro_tf_od_api",
    ):
        result = inspect.verify(paths, images=True)
        assert result.ok, result.problems
        kinds.update({Path(f.path).name: f.record_type for f in result.files})
    assert kinds["example.tfrecord"] == "Example"
    assert kinds["sequence_example.tfrecord"] == "SequenceExample"
    assert kinds["train_elwc.tfrecord"] == "ExampleListWithContext"
    assert kinds["data_tfrecord-00000-of-00002.gz"] == "Example"


@pytest.mark.parametrize("kind", ["flip", "truncate", "zero"])
def test_verify_names_the_damaged_record(coco_shard: Any, tmp_path: Path, kind: str) -> None:
    path, records, offsets = coco_shard
    at = {"flip": offsets[5] + 5000, "truncate": offsets[10] + 7, "zero": offsets[8] - 1000}[kind]
    bad = damage(path, tmp_path / "bad.tfrecord", kind, at)
    result = inspect.verify(bad)
    assert not result.ok
    hit = max(i for i, o in enumerate(offsets) if o <= at)
    first = result.problems[0]
    assert (first.record, first.offset) == (hit, offsets[hit])
    assert str(first).startswith(f"{bad}: record {hit} at byte offset {offsets[hit]}: ")
    expected_kind = {"flip": "crc", "truncate": "truncated", "zero": "crc"}[kind]
    assert first.kind == expected_kind
    if kind == "zero":
        # The zeros also wipe the next record's header: a framing problem there, after
        # which the walk finds every later record again.
        assert result.problems[1].kind == "framing"
        assert result.problems[1].offset == offsets[hit + 1]
        assert len(result.problems) == 2
        assert result.records == len(records) - 1  # the record whose header is gone


def test_verify_damaged_shard_in_dataset(coco: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(coco, copy)
    shard = next(copy.glob("*-00001-of-*.tfrecord"))
    size = shard.stat().st_size
    damage(shard, shard, "zero", size // 2)
    result = inspect.verify(copy)
    # The zeros fall inside one record's image bytes: its CRC, and the file's checksum.
    assert [p.kind for p in result.problems] == ["crc", "manifest"]
    assert all(p.file == str(shard) for p in result.problems)
    entry = next(s for s in rf.Manifest.load(copy).splits["train"] if s.file == shard.name)
    assert result.problems[1].message == (
        f"checksum is crc32c:{google_crc32c.value(shard.read_bytes()):08x}, "
        f"dataset.json says {entry.checksum}"
    )
    assert [p.kind for p in inspect.verify(copy, checksums=False).problems] == ["crc"]


@pytest.mark.parametrize("compression", [None, "gzip"])
@pytest.mark.parametrize("checksum", ["crc32c", "sha256"])
def test_shard_checksums(tmp_path: Path, checksum: str, compression: str | None) -> None:
    """dataset.json's checksums are those of the files' bytes, by an independent
    implementation (google-crc32c, hashlib), and verify catches a changed byte that the
    record CRCs cannot see (a record's stored CRC rewritten to match)."""
    rows = [{"x": np.arange(i % 50, dtype=np.int64), "b": b"y" * (i % 300)} for i in range(3000)]
    out = tmp_path / "ds"
    manifest = rf.write_dataset(
        rows, out, max_records=1000, checksum=checksum, compression=compression
    )
    shards = manifest.splits["train"]
    assert len(shards) == 3
    for shard in shards:
        data = (out / shard.file).read_bytes()
        if checksum == "crc32c":
            assert shard.checksum == f"crc32c:{google_crc32c.value(data):08x}"
        else:
            assert shard.checksum == f"sha256:{hashlib.sha256(data).hexdigest()}"
        assert rf._core.file_crc32c(out / shard.file) == google_crc32c.value(data)
    assert inspect.verify(out).ok
    assert json.loads((out / "dataset.json").read_text())["splits"]["train"]["shards"][0][
        "checksum"
    ].startswith(f"{checksum}:")
    if compression:
        return
    # Swap two records of the middle shard: framing and CRCs stay valid, the checksum not.
    path = out / shards[1].file
    records = list(rf.read_records(path))
    with rf.TFRecordWriter(path) as w:
        w.write_many([records[1], records[0], *records[2:]])
    result = inspect.verify(out)
    assert [(p.file, p.kind) for p in result.problems] == [(str(path), "manifest")]
    assert result.problems[0].message.startswith(f"checksum is {checksum}:")


def test_manifest_with_sha256_field_still_verifies(tmp_path: Path) -> None:
    """Manifests written before the checksum choice store ``"sha256": "<hex>"``."""
    out = tmp_path / "ds"
    rf.write_dataset([{"x": i} for i in range(100)], out, max_records=40, checksum="sha256")
    data = json.loads((out / "dataset.json").read_text())
    for shard in data["splits"]["train"]["shards"]:
        shard["sha256"] = shard.pop("checksum").removeprefix("sha256:")
    (out / "dataset.json").write_text(json.dumps(data))
    loaded = rf.Manifest.load(out)
    assert all(s.checksum_algorithm == "sha256" for s in loaded.splits["train"])
    assert inspect.verify(out).ok
    shard = out / loaded.splits["train"][0].file
    records = list(rf.read_records(shard))
    with rf.TFRecordWriter(shard) as w:
        w.write_many(records[::-1])
    assert [p.kind for p in inspect.verify(out).problems] == ["manifest"]


def test_unknown_checksum_algorithm_is_a_problem(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    rf.write_dataset([{"x": i} for i in range(10)], out)
    data = json.loads((out / "dataset.json").read_text())
    data["splits"]["train"]["shards"][0]["checksum"] = "md5:0123"
    (out / "dataset.json").write_text(json.dumps(data))
    problems = inspect.verify(out).problems
    assert [p.message for p in problems] == [
        "dataset.json gives checksum 'md5:0123': unknown algorithm"
    ]


def test_writer_checksum_argument(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="checksum must be 'crc32c' or 'sha256'"):
        rf.TFRecordWriter(tmp_path / "a.tfrecord", checksum="md5")
    with pytest.raises(ValueError, match="checksum must be 'crc32c' or 'sha256'"):
        rf.WriteOptions(checksum="md5")
    with rf.TFRecordWriter(tmp_path / "a.tfrecord") as w:
        w.write(b"x")
    assert w.checksum is None
    big = [bytes([i]) * 300_000 for i in range(20)]  # several 1 MB buffers
    for algorithm, oracle in (
        ("crc32c", lambda d: f"{google_crc32c.value(d):08x}"),
        ("sha256", lambda d: hashlib.sha256(d).hexdigest()),
    ):
        path = tmp_path / f"{algorithm}.tfrecord.gz"
        with rf.TFRecordWriter(path, "gzip", checksum=algorithm) as w:
            w.write_many(big)
        assert w.checksum == f"{algorithm}:{oracle(path.read_bytes())}"


def test_verify_checks_the_schema_and_index(tmp_path: Path) -> None:
    schema = rf.Schema(
        {
            "bbox": rf.FeatureSpec(dtype="float32", shape=(4,)),
            "label": rf.FeatureSpec(dtype="int64"),
        }
    )
    rows = [
        {"bbox": np.zeros(4, np.float32), "label": 1},
        {"bbox": np.zeros(3, np.float32), "label": 2},
        {"bbox": np.zeros(4, np.float32), "label": "cat"},
        {"bbox": np.zeros(4, np.float32)},
    ]
    rf.write_dataset(rows, tmp_path / "d", schema=schema, index=True)
    problems = inspect.verify(tmp_path / "d").problems
    assert [(p.kind, p.record) for p in problems] == [("schema", 1), ("schema", 2), ("schema", 3)]
    assert "expected 4 value(s)" in problems[0].message
    assert "expected int64 values, found bytes" in problems[1].message
    assert "'label' is missing" in problems[2].message
    idx = next((tmp_path / "d").glob("*.idx"))
    lines = idx.read_text().splitlines()
    idx.write_text("\n".join([lines[0], "1 2", *lines[2:]]) + "\n")
    problems = inspect.verify(tmp_path / "d").problems
    assert problems[-1].kind == "index" and problems[-1].record == 1


def test_verify_gzip_damage(coco_shard: Any, tmp_path: Path) -> None:
    path, records, offsets = coco_shard
    gz = tmp_path / "shard.tfrecord.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    cut = damage(gz, tmp_path / "cut.gz", "truncate", gz.stat().st_size // 2)
    result = inspect.verify(cut)
    assert not result.ok
    assert [p.kind for p in result.problems] == ["truncated", "compression"]
    # Every record fully inside the part that decompresses was parsed and counted.
    assert 0 < result.records < len(records)
    assert result.problems[0].offset == offsets[result.records]


# --------------------------------------------------------------------------------------
# salvage


def expected_survivors(
    records: list[bytes], offsets: list[int], start: int, end: int
) -> list[bytes]:
    """The records whose bytes do not touch ``[start, end)``."""
    ends = [o + len(r) + 16 for r, o in zip(records, offsets, strict=True)]
    return [r for r, o, e in zip(records, offsets, ends, strict=True) if e <= start or o >= end]


@pytest.mark.parametrize(
    ("kind", "where"),
    [
        ("flip", "payload"),
        ("flip", "header"),
        ("truncate", "middle"),
        ("zero", "boundary"),
        ("zero", "middle"),
    ],
)
def test_salvage_recovers_every_intact_record(
    coco_shard: Any, tmp_path: Path, kind: str, where: str
) -> None:
    path, records, offsets = coco_shard
    size = path.stat().st_size
    at = {
        ("flip", "payload"): offsets[3] + 9000,
        ("flip", "header"): offsets[7] + 2,  # the length field
        ("truncate", "middle"): size // 2,
        ("zero", "boundary"): offsets[8] - 1000,
        ("zero", "middle"): size // 2,
    }[(kind, where)]
    bad = damage(path, tmp_path / "bad.tfrecord", kind, at)
    damaged_end = {"flip": at + 1, "truncate": size, "zero": at + 4096}[kind]
    result = inspect.salvage(bad, tmp_path / "out.tfrecord")
    got = list(rf.read_records(tmp_path / "out.tfrecord"))  # every CRC checks
    assert got == expected_survivors(records, offsets, at, damaged_end)
    assert result.records == len(got) and result.damaged
    # Every byte of the damaged file was either copied in an intact record or reported lost.
    assert sum(len(r) + 16 for r in got) + result.lost_bytes == bad.stat().st_size
    assert result.lost[0].start == max(o for o in offsets if o <= at)


def test_salvage_many_small_records(tmp_path: Path) -> None:
    records = small_records_file(tmp_path / "small.tfrecord")
    _, offsets = spans_of(tmp_path / "small.tfrecord")
    at = (tmp_path / "small.tfrecord").stat().st_size // 2
    bad = damage(tmp_path / "small.tfrecord", tmp_path / "bad.tfrecord", "zero", at)
    result = inspect.salvage(bad, tmp_path / "out.tfrecord")
    survivors = expected_survivors(records, offsets, at, at + 4096)
    assert len(records) - len(survivors) >= 15  # the block spans many records
    assert list(rf.read_records(tmp_path / "out.tfrecord")) == survivors
    # The lost bytes are exactly the records the block touched.
    touched = [
        o for o, r in zip(offsets, records, strict=True) if o < at + 4096 and o + len(r) + 16 > at
    ]
    assert result.lost[0].start == touched[0]
    assert result.lost[-1].end == touched[-1] + len(records[offsets.index(touched[-1])]) + 16
    # count and verify agree on the damage
    assert inspect.verify(bad).problems[0].offset == touched[0]


def test_salvage_output_is_read_by_tensorflow(coco_shard: Any, tmp_path: Path) -> None:
    tf = pytest.importorskip("tensorflow")
    path, records, offsets = coco_shard
    bad = damage(path, tmp_path / "bad.tfrecord", "zero", offsets[4] + 3)
    with pytest.raises(tf.errors.DataLossError):
        sum(1 for _ in tf.data.TFRecordDataset(str(bad)))
    inspect.salvage(bad, tmp_path / "out.tfrecord")
    got = [x.numpy() for x in tf.data.TFRecordDataset(str(tmp_path / "out.tfrecord"))]
    assert got == records[:4] + records[5:]


def test_salvage_intact_gzip_and_compressed_damage(coco_shard: Any, tmp_path: Path) -> None:
    path, records, _ = coco_shard
    result = inspect.salvage(path, tmp_path / "same.tfrecord")
    assert not result.damaged and result.records == len(records)
    assert (tmp_path / "same.tfrecord").read_bytes() == path.read_bytes()
    gz = tmp_path / "shard.gz"
    with rf.TFRecordWriter(gz, compression="gzip") as w:
        w.write_many(records)
    cut = damage(gz, tmp_path / "cut.gz", "truncate", gz.stat().st_size * 2 // 3)
    result = inspect.salvage(cut, tmp_path / "out.gz")
    assert result.compression == "gzip" and result.damaged
    got = list(rf.read_records(tmp_path / "out.gz"))
    assert 0 < len(got) < len(records) and got == records[: len(got)]
    with pytest.raises(FileExistsError):
        inspect.salvage(cut, tmp_path / "out.gz")
    with pytest.raises(ValueError, match="must not be the damaged file"):
        inspect.salvage(cut, cut, overwrite=True)


# --------------------------------------------------------------------------------------
# index


def test_index_equals_the_writers_and_the_reference(
    coco: Path, vectors: Path, tmp_path: Path
) -> None:
    shard = next(coco.glob("*-00002-of-*.tfrecord"))
    copy = tmp_path / shard.name
    shutil.copy(shard, copy)
    result = inspect.write_index(copy)
    assert result.ok and result.files[0].records == 16
    assert Path(f"{copy}.idx").read_bytes() == Path(f"{shard}.idx").read_bytes()
    example = tmp_path / "example.tfrecord"
    shutil.copy(vectors / "pytorch_data" / "example.tfrecord", example)
    inspect.write_index(example)
    assert Path(f"{example}.idx").read_text() == "0 124\n124 131\n255 134\n389 134\n"


def test_index_is_read_by_the_tfrecord_package(coco_shard: Any, tmp_path: Path) -> None:
    path, records, _ = coco_shard
    copy = tmp_path / "shard.tfrecord"
    shutil.copy(path, copy)
    inspect.write_index(copy)
    # tfrecord registers protobuf messages that clash with TensorFlow's: own process.
    script = (
        "import sys, json; from tfrecord.reader import tfrecord_loader\n"
        "out = []\n"
        "for shard in range(3):\n"
        "    for r in tfrecord_loader(sys.argv[1], sys.argv[2], {'image/source_id': 'byte'},"
        " shard=(shard, 3)):\n"
        "        out.append(bytes(r['image/source_id']).decode())\n"
        "print(json.dumps(out))\n"
    )
    if importlib.util.find_spec("tfrecord") is None:
        pytest.skip("the tfrecord package is not installed")
    done = subprocess.run(
        [sys.executable, "-c", script, str(copy), f"{copy}.idx"],
        capture_output=True,
        text=True,
        check=True,
    )
    expected = [rf.decode_example(r)["image/source_id"][0].decode() for r in records]
    assert json.loads(done.stdout) == expected


def test_index_refuses_damaged_files(coco_shard: Any, tmp_path: Path) -> None:
    path, _, offsets = coco_shard
    bad = damage(path, tmp_path / "bad.tfrecord", "flip", offsets[2] + 40)
    result = inspect.write_index(bad)
    assert not result.ok and not Path(f"{bad}.idx").exists()
    assert (result.problems[0].record, result.problems[0].offset) == (2, offsets[2])


# --------------------------------------------------------------------------------------
# info


def test_info_dataset(coco: Path) -> None:
    result = inspect.info(coco, scan=None)
    assert result.record_type == "Example" and result.records == 50
    assert result.splits == {"train": {"shards": 4, "records": 50, "bytes": result.bytes}}
    assert result.schema_source == "dataset.json" and result.scanned == 50
    assert all(f.index for f in result.files)
    features = {f.name: f for f in result.features}
    assert features["image/encoded"].meaning == "image (jpeg)"
    assert features["image/object/class/label"].meaning == "class_label (80 names)"
    boxes = features["image/object/bbox/xmin"]
    assert (boxes.shape, boxes.min_length, boxes.max_length) == ("(None,)", 0, 26)
    assert features["image/height"].shape == "()"


def test_info_foreign_files(vectors: Path, taxi: Path, tmp_path: Path) -> None:
    result = inspect.info(taxi, scan=None)
    assert (result.records, result.compression, result.scanned) == (15_000, ["gzip"], 15_000)
    features = {f.name: f for f in result.features}
    assert features["pickup_census_tract"].dtype == "(empty)"
    assert features["fare"].dtype == "float32" and features["fare"].shape == "()"
    assert features["company"].dtype == "string" and features["company"].min_length == 0
    assert features["trip_start_hour"].dtype == "int64"
    seq = inspect.info(vectors / "pytorch_data" / "sequence_example.tfrecord")
    assert seq.record_type == "SequenceExample"
    parts = {(f.part, f.name): f for f in seq.features}
    assert parts[("feature_list", "x_int_seq")].shape == "(None, 10)"
    assert parts[("context", "x_int")].shape == "(10,)"
    od = inspect.info(vectors / "datumaro_tf_od_api")
    assert {f.name: f.meaning for f in od.features}["image/encoded"] == "image (jpeg)"
    ranking = inspect.info(vectors / "tf_ranking")
    assert ranking.record_type == "ExampleListWithContext" and ranking.records == 19
    assert "not tf.train.Example" in ranking.notes[0]
    with rf.TFRecordWriter(tmp_path / "raw.tfrecord") as w:
        w.write_many([b"\xff\xfe not a proto", b"\x00\x01\x02"])
    raw = inspect.info(tmp_path / "raw.tfrecord")
    assert (raw.record_type, raw.records, raw.features) == ("unknown", 2, [])


# --------------------------------------------------------------------------------------
# head


def test_head(coco: Path, tiny: dict[str, Path], vectors: Path) -> None:
    result = inspect.head(coco, n=3)
    assert [r.index for r in result.records] == [0, 1, 2]
    images = {i["id"]: i for i in json.loads(tiny["annotations"].read_text())["images"]}
    for r in result.records:
        image = images[int(r.features["image/source_id"][0])]
        shown = inspect.describe_value(r.features["image/encoded"])
        size = len(r.features["image/encoded"][0])
        assert shown == f"[<JPEG {image['width']}x{image['height']}, {size / 1000:.0f} KB>]"
    some = inspect.head(coco, n=2, features=["image/filename", "image/height"])
    assert [list(r.features) for r in some.records] == [["image/filename", "image/height"]] * 2
    with pytest.raises(ValueError, match=r"'nope'.*they have: .*image/encoded"):
        inspect.head(coco, n=2, features=["nope"])
    seq = inspect.head(vectors / "pytorch_data" / "sequence_example.tfrecord", n=1).records[0]
    assert seq.record_type == "SequenceExample"
    assert seq.feature_lists is not None and len(seq.feature_lists["x_int_seq"]) == 3
    elwc = inspect.head(vectors / "tf_ranking" / "train_elwc.tfrecord", n=1).records[0]
    assert elwc.examples is not None and elwc.features["query_tokens"][0] == b"this"
    text = inspect.describe_value([b"x" * 500])
    assert text.endswith("(500 chars)]") and len(text) < 80


# --------------------------------------------------------------------------------------
# stats


def test_stats_coco(coco: Path, tiny: dict[str, Path]) -> None:
    result = inspect.stats(coco)
    assert result.records == 50
    features = {f.name: f for f in result.features}
    data = json.loads(tiny["annotations"].read_text())
    names = {c["id"]: c["name"] for c in data["categories"]}
    expected = Counter(a["category_id"] for a in data["annotations"])
    labels = features["image/object/class/label"].class_labels
    assert labels is not None
    assert {c["id"]: c["count"] for c in labels} == dict(expected)
    assert all(c["name"] == names[c["id"]] for c in labels)
    images = features["image/encoded"].images
    assert images is not None and images["formats"] == {"JPEG": 50}
    widths = [i["width"] for i in data["images"]]
    assert (images["width"]["min"], images["width"]["max"]) == (min(widths), max(widths))
    boxes = features["image/object/bbox/xmin"]
    assert boxes.length["max"] == max(Counter(a["image_id"] for a in data["annotations"]).values())
    assert boxes.numbers is not None and 0 <= boxes.numbers["min"] <= boxes.numbers["max"] <= 1


def test_stats_taxi_numbers(taxi: Path, shared_data: Path) -> None:
    import csv

    with open(shared_data / "tfx_chicago_taxi" / "data.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    fares = np.array([float(r["fare"]) for r in rows if r["fare"]], np.float32).astype(np.float64)
    result = {f.name: f for f in inspect.stats(taxi).features}
    fare = result["fare"].numbers
    assert fare is not None and fare["count"] == len(fares)
    assert fare["min"] == fares.min() and fare["max"] == fares.max()
    assert fare["mean"] == pytest.approx(fares.mean(), rel=1e-9)
    assert fare["std"] == pytest.approx(fares.std(), rel=1e-6)
    payment = dict(result["payment_type"].top_values or [])
    assert payment == dict(Counter(r["payment_type"] for r in rows).most_common(10))
    assert result["pickup_census_tract"].empty == 15_000


def test_stats_od_api_names_from_text(vectors: Path) -> None:
    result = {f.name: f for f in inspect.stats(vectors / "datumaro_tf_od_api").features}
    labels = result["image/object/class/label"].class_labels
    assert labels == [
        {"id": 0, "name": None, "count": 1},
        {"id": 3, "name": "label_2", "count": 1},
        {"id": 4, "name": "label_3", "count": 2},
    ]


# --------------------------------------------------------------------------------------
# preview


def test_preview_draws_boxes(coco: Path, tmp_path: Path) -> None:
    from PIL import Image as PILImage

    result = inspect.preview(coco, tmp_path / "grid.png", n=4, cell=200)
    sheet = PILImage.open(tmp_path / "grid.png").convert("RGB")
    assert sheet.size == (result.width, result.height) == (2 * 208 + 8, 2 * (208 + 28) + 8)
    assert len(result.cells) == 4
    first = rf.decode_example(next(iter(rf.read_records(inspect.resolve(coco)[0].path))))
    cell = result.cells[0]
    assert len(cell.boxes) == len(first["image/object/bbox/xmin"]) > 0
    source = PILImage.open(__import__("io").BytesIO(first["image/encoded"][0])).convert("RGB")
    thumb = np.asarray(source.resize((cell.width, cell.height), PILImage.Resampling.BILINEAR))
    drawn = np.asarray(sheet)[cell.y : cell.y + cell.height, cell.x : cell.x + cell.width]
    inside = np.zeros(drawn.shape[:2], bool)
    for x0, y0, x1, y1, _ in cell.boxes:
        # Boxes match the record's normalized coordinates, placed in the cell.
        inside[int(y0 - cell.y) : int(y1 - cell.y) + 1, int(x0 - cell.x) : int(x1 - cell.x) + 1] = (
            True
        )
    # The first box is where the record's normalized coordinates say, in the cell.
    x0, y0, x1, y1, name = cell.boxes[0]
    assert x0 == pytest.approx(cell.x + first["image/object/bbox/xmin"][0] * cell.width, abs=0.6)
    assert y1 == pytest.approx(cell.y + first["image/object/bbox/ymax"][0] * cell.height, abs=0.6)
    assert name == first["image/object/class/text"][0].decode()
    big = max(cell.boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
    cx, cy = int((big[0] + big[2]) / 2 - cell.x), int((big[1] + big[3]) / 2 - cell.y)
    assert (drawn[cy, cx] != thumb[cy, cx]).any()  # tinted inside the box
    assert (drawn[inside] != thumb[inside]).any(axis=-1).mean() > 0.9
    # Outside the boxes the image is untouched (but for label text running past a box).
    assert (drawn[~inside] == thumb[~inside]).all(axis=-1).mean() > 0.97


def test_preview_od_api_and_per_annotation(
    vectors: Path, tiny: dict[str, Path], tmp_path: Path
) -> None:
    result = inspect.preview(vectors / "datumaro_tf_od_api", tmp_path / "od.png", n=3)
    boxes = {Path(c.file).name: c for c in result.cells}
    train = boxes["train.tfrecord"]
    assert [b[4] for b in train.boxes] == ["label_2", "label_3", "0"]
    # xmin 0, ymin 0.25, xmax 0.25, ymax 0.75 of a 16x16 image scaled to 256 px:
    assert train.boxes[0][:4] == (train.x + 0.0, train.y + 64.0, train.x + 64.0, train.y + 192.0)
    source = CocoSource.from_files(tiny["annotations"], tiny["images"], per="annotation")
    out = tmp_path / "per_annotation"
    rf.write_dataset(source.items()[:3], out, to_records=source.to_records, schema=source.schema())
    result = inspect.preview(out, tmp_path / "ann.png", n=4)
    assert len(result.cells) == 4 and all(len(c.boxes) == 1 for c in result.cells)
    assert all(c.boxes[0][4] and not c.boxes[0][4].isdigit() for c in result.cells)
