"""Remote paths against a local S3 server (moto, on loopback, offline): conversions to and
from s3:// with the local writer and on Beam, open_dataset, info / count / verify /
index / salvage / preview on s3:// URLs, demo and convert with s3:// paths; writes are
committed (no temporary key left behind)."""

from __future__ import annotations

import doctest
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import moto_s3

import recordforge as rf
from recordforge import _fs
from recordforge.cli.__main__ import main
from recordforge.sources.coco import CocoSource
from recordforge.sources.images import ImageFolderSource
from recordforge.sources.table import TableSource

s3fs = pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

BUCKET = "recordforge-test"


@pytest.fixture(scope="module")
def s3() -> Iterator[Any]:
    with moto_s3(BUCKET) as fs:
        yield fs


@pytest.fixture
def prefix(s3: Any, request: pytest.FixtureRequest) -> str:
    name = request.node.name.replace("[", "-").replace("]", "")
    return f"s3://{BUCKET}/{name}"


def _digests(ds: rf.Dataset) -> list[str]:
    return sorted(hashlib.sha256(r).hexdigest() for r in ds._raw())


def _no_temporary_keys(fs: Any, url: str) -> None:
    names = [p.rsplit("/", 1)[-1] for p in fs.find(url.split("://", 1)[1])]
    assert names, url
    assert [n for n in names if n.startswith(".")] == []


def test_fs_doctest() -> None:
    test = doctest.DocTestParser().get_doctest(_fs.__doc__ or "", {}, "_fs", None, 0)
    runner = doctest.DocTestRunner()
    runner.run(test)
    assert runner.summarize(verbose=False).failed == 0


def test_write_dataset_to_s3_and_read_back(s3: Any, prefix: str, tmp_path: Path) -> None:
    rows = [
        {"id": i, "name": f"row {i}", "v": np.arange(i % 4, dtype=np.float32)} for i in range(300)
    ]
    local = rf.write_dataset(rows, tmp_path / "local", max_records=64, index=True)
    remote = rf.write_dataset(rows, f"{prefix}/out", max_records=64, index=True)
    assert remote.to_json() == local.to_json()
    _no_temporary_keys(s3, prefix)
    ds = rf.open_dataset(f"{prefix}/out")
    assert len(ds) == 300
    assert _digests(ds) == _digests(rf.open_dataset(tmp_path / "local"))
    assert [int(r["id"]) for r in ds] == list(range(300))
    assert int(ds[123]["id"]) == 123  # random access: the shard is downloaded once
    batch = next(ds.batches(100))
    assert batch["id"].tolist() == list(range(100))
    # A directory of files and a glob, without the manifest's help.
    files = rf.open_dataset(f"{prefix}/out/train-0000[0-1]-*.tfrecord")
    assert len(files) == 128
    # Refused like a local directory: a complete dataset needs overwrite.
    with pytest.raises(FileExistsError, match="complete dataset"):
        rf.write_dataset(rows, f"{prefix}/out", max_records=64)
    rf.write_dataset(rows[:10], f"{prefix}/out", overwrite=True)
    assert len(rf.open_dataset(f"{prefix}/out")) == 10


def test_cli_table_to_s3_then_info_count_verify_index(
    s3: Any, prefix: str, shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = shared_data / "tfx_chicago_taxi" / "data.csv"
    s3.put_file(str(csv), f"{BUCKET}/{prefix.rsplit('/', 1)[-1]}/in/data.csv")
    src = f"{prefix}/in/data.csv"
    out = f"{prefix}/taxi"
    assert main(["convert", "table", src, "--out", out, "--max-records", "4000"]) == 0
    local = ["--out", str(tmp_path / "local"), "--max-records", "4000"]
    assert main(["convert", "table", str(csv), *local]) == 0
    assert _digests(rf.open_dataset(out)) == _digests(rf.open_dataset(tmp_path / "local"))
    capsys.readouterr()
    assert main(["count", out]) == 0
    assert "15" in capsys.readouterr().out
    counted = rf.inspect.count(out)
    assert counted.records == 15_000
    assert rf.inspect.verify(out).ok
    info = rf.inspect.info(out)
    assert info.to_json()["records"] == 15_000
    assert main(["verify", out]) == 0
    assert main(["info", out]) == 0
    # Reports name the URLs given, not the local copies inspected.
    shard = f"{out}/train-00001-of-00004.tfrecord"
    assert [f.path for f in counted.files][1] == shard
    assert [f["path"] for f in info.to_json()["files"]][1] == shard
    assert {r.file for r in rf.inspect.head(shard, n=2).records} == {shard}
    key = shard.split("://", 1)[1]
    data = bytearray(s3.cat_file(key))
    data[len(data) // 2] ^= 1
    s3.pipe_file(key, bytes(data))
    # The changed object is downloaded again (the local copy is keyed by its version).
    problems = rf.inspect.verify(out).problems
    assert problems and {p.file for p in problems} == {shard}
    assert all("/tmp" not in str(p) for p in problems), problems
    result = rf.inspect.write_index(f"{out}/train-00000-of-00004.tfrecord")
    assert result.files[0].index_path == f"{out}/train-00000-of-00004.tfrecord.idx"
    assert s3.exists(f"{out.split('://', 1)[1]}/train-00000-of-00004.tfrecord.idx")
    _no_temporary_keys(s3, out)


def test_coco_from_s3_on_beam_to_s3(
    s3: Any, prefix: str, shared_data: Path, tmp_path: Path
) -> None:
    """COCO annotations and images read from s3://, converted on Beam (in-process) into
    s3://: the same shards as the local conversion of the local files."""
    beam = pytest.importorskip("apache_beam")
    import recordforge.beam as rfbeam

    tiny = shared_data / "tiny_coco"
    key = prefix.split("://", 1)[1]
    s3.put(str(tiny / "val2017"), f"{key}/coco/val2017", recursive=True)
    s3.put_file(str(tiny / "annotations" / "instances_val2017.json"), f"{key}/coco/instances.json")
    options = {"num_shards": 3, "shuffle": True, "seed": 4}
    here = CocoSource.from_files(tiny / "annotations" / "instances_val2017.json", tiny / "val2017")
    local = rf.write_dataset(
        here.items(),
        tmp_path / "local",
        to_records=here.to_records,
        schema=here.schema(),
        report=here.report(),
        **options,
    )
    there = CocoSource.from_files(f"{prefix}/coco/instances.json", f"{prefix}/coco/val2017")
    assert beam is not None
    on_beam = rfbeam.convert(there, f"{prefix}/beam", **options)
    assert on_beam.splits == local.splits  # same files, counts, sizes and checksums
    assert on_beam.report == local.report
    assert rf.inspect.verify(f"{prefix}/beam").ok
    _no_temporary_keys(s3, f"{prefix}/beam")
    ds = rf.open_dataset(f"{prefix}/beam")
    assert _digests(ds) == _digests(rf.open_dataset(tmp_path / "local"))


def test_image_folder_from_s3(s3: Any, prefix: str, tmp_path: Path) -> None:
    from PIL import Image

    root = tmp_path / "images"
    for label in ("cat", "dog"):
        (root / label / "sub").mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8 + i, 6), (i * 40, 0, 0)).save(root / label / f"{i}.png")
        Image.new("RGB", (5, 5)).save(root / label / "sub" / "x.jpg")
    key = prefix.split("://", 1)[1]
    s3.put(str(root), f"{key}/images", recursive=True)
    here = ImageFolderSource(root)
    there = ImageFolderSource(f"{prefix}/images")
    assert there.names == here.names == ("cat", "dog")
    assert there.items() == here.items()
    records_here = [r for item in here.items() for r in here.to_records(item)]
    records_there = [r for item in there.items() for r in there.to_records(item)]
    assert records_there == records_here


def test_table_parquet_from_s3(s3: Any, prefix: str, tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table({"id": list(range(50)), "name": [f"n{i}" for i in range(50)]})
    pq.write_table(table, tmp_path / "t.parquet")
    key = prefix.split("://", 1)[1]
    s3.put_file(str(tmp_path / "t.parquet"), f"{key}/t.parquet")
    here, there = TableSource(tmp_path / "t.parquet"), TableSource(f"{prefix}/t.parquet")
    assert there.path == f"{prefix}/t.parquet"
    assert there.schema() == here.schema()
    got = [r for b in there.items() for r in there.to_records(b).records]
    assert got == [r for b in here.items() for r in here.to_records(b).records]


@pytest.mark.parametrize("name", ["t.csv", "t.csv.gz"])
def test_table_csv_parts_from_s3(s3: Any, prefix: str, tmp_path: Path, name: str) -> None:
    """A CSV on S3 is cut into the parts of the same file on disk (byte ranges read with
    a seek, quoted line ends respected); a gzip is one part read from its start."""
    import gzip

    text = "id,text\n" + "".join(f'{i},"row {i}\nline 2"\n' for i in range(300))
    data = text.encode() if name == "t.csv" else gzip.compress(text.encode(), mtime=0)
    (tmp_path / name).write_bytes(data)
    key = prefix.split("://", 1)[1]
    s3.put_file(str(tmp_path / name), f"{key}/{name}")
    here = TableSource(tmp_path / name, part_bytes=500)
    there = TableSource(f"{prefix}/{name}", part_bytes=500)
    assert there.num_records() == here.num_records() == 300
    assert [(p.start, p.stop, p.rows) for p in there.items()] == [
        (p.start, p.stop, p.rows) for p in here.items()
    ]
    assert len(there.items()) == (1 if name.endswith(".gz") else 12)
    got = [r for p in there.items() for r in there.to_records(p).records]
    assert got == [r for p in here.items() for r in here.to_records(p).records]


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_salvage_from_s3_to_s3_equals_local(
    s3: Any, prefix: str, tmp_path: Path, compression: str | None
) -> None:
    records = [bytes([i % 251]) * (40 + i) for i in range(300)]
    good = tmp_path / "good.tfrecord"
    with rf.TFRecordWriter(good, compression=compression) as w:
        w.write_many(records)
    data = bytearray(good.read_bytes())
    if compression is None:
        data[len(data) // 2 : len(data) // 2 + 300] = bytes(300)  # garbage in the middle
    else:
        del data[len(data) * 2 // 3 :]  # a compressed stream cut short
    bad = tmp_path / "bad.tfrecord"
    bad.write_bytes(bytes(data))
    key = prefix.split("://", 1)[1]
    s3.put_file(str(bad), f"{key}/bad.tfrecord")
    here = rf.inspect.salvage(bad, tmp_path / "fixed.tfrecord")
    there = rf.inspect.salvage(f"{prefix}/bad.tfrecord", f"{prefix}/out/fixed.tfrecord")
    assert here.damaged and 0 < here.records < len(records)
    assert (there.source, there.out) == (f"{prefix}/bad.tfrecord", f"{prefix}/out/fixed.tfrecord")
    local_json, remote_json = here.to_json(), there.to_json()
    for result in (local_json, remote_json):
        del result["source"], result["out"]
    assert remote_json == local_json
    fixed = s3.cat_file(f"{key}/out/fixed.tfrecord")
    assert fixed == (tmp_path / "fixed.tfrecord").read_bytes()
    _no_temporary_keys(s3, f"{prefix}/out")
    with pytest.raises(FileExistsError, match="exists"):
        rf.inspect.salvage(f"{prefix}/bad.tfrecord", f"{prefix}/out/fixed.tfrecord")
    with pytest.raises(ValueError, match="must not be the damaged file"):
        rf.inspect.salvage(f"{prefix}/bad.tfrecord", f"{prefix}/bad.tfrecord", overwrite=True)
    # The command line, from s3:// to s3:// and from s3:// to a local file: exit 1 (damaged).
    assert main(["salvage", f"{prefix}/bad.tfrecord", f"{prefix}/out/cli.tfrecord"]) == 1
    s3.invalidate_cache()  # this filesystem object listed out/ before the upload
    assert s3.cat_file(f"{key}/out/cli.tfrecord") == fixed
    assert main(["salvage", f"{prefix}/bad.tfrecord", str(tmp_path / "cli.tfrecord")]) == 1
    assert (tmp_path / "cli.tfrecord").read_bytes() == fixed
    _no_temporary_keys(s3, f"{prefix}/out")


def test_demo_and_preview_on_s3(
    s3: Any, prefix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`demo` writes its dataset to s3:// (the shapes sample stays local); `preview` reads
    that dataset and writes its sheet to s3://: the same PNG as from the local copy."""
    pytest.importorskip("PIL")
    import recordforge.demo as demo

    here = demo.run(tmp_path / "demo", images=12, max_records=5)
    there = demo.run(f"{prefix}/demo", images=12, max_records=5)
    assert there.out == f"{prefix}/demo/dataset"
    assert there.manifest.splits == here.manifest.splits  # same files, counts and checksums
    assert there.first_record.keys() == here.first_record.keys()
    key = prefix.split("://", 1)[1]
    assert [p.rsplit("/", 1)[-1] for p in s3.ls(f"{key}/demo")] == ["dataset"]
    local = rf.inspect.preview(here.out, tmp_path / "sheet.png", n=6, cell=96)
    remote = rf.inspect.preview(there.out, f"{prefix}/sheets/sheet.png", n=6, cell=96)
    assert remote.path == f"{prefix}/sheets/sheet.png"
    assert (remote.width, remote.height) == (local.width, local.height)
    assert [c.boxes for c in remote.cells] == [c.boxes for c in local.cells]
    assert remote.cells[0].file == f"{there.out}/{here.manifest.splits['train'][0].file}"
    assert s3.cat_file(f"{key}/sheets/sheet.png") == (tmp_path / "sheet.png").read_bytes()
    assert main(["preview", str(there.out), "--out", f"{prefix}/sheets/cli.png", "-n", "6"]) == 0
    assert s3.cat_file(f"{key}/sheets/cli.png")[:8] == b"\x89PNG\r\n\x1a\n"
    _no_temporary_keys(s3, f"{prefix}/sheets")
    capsys.readouterr()
    assert main(["demo", "--out", f"{prefix}/cli-demo", "--images", "5", "--no-train"]) == 0
    assert "dataset written to" in capsys.readouterr().out
    assert len(rf.open_dataset(f"{prefix}/cli-demo/dataset")) == 5


def test_convert_table_with_schema_from_s3(s3: Any, prefix: str, tmp_path: Path) -> None:
    csv = tmp_path / "t.csv"
    csv.write_text("id,name\n" + "".join(f"{i},n{i}\n" for i in range(20)), encoding="utf-8")
    schema = TableSource(csv).schema()
    key = prefix.split("://", 1)[1]
    s3.pipe_file(f"{key}/schema.json", json.dumps(schema.to_json()).encode())
    args = ["convert", "table", str(csv), "--schema", f"{prefix}/schema.json"]
    assert main([*args, "--out", f"{prefix}/out"]) == 0
    ds = rf.open_dataset(f"{prefix}/out")
    assert ds.schema == schema and [int(r["id"]) for r in ds] == list(range(20))


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_record_functions_take_urls(s3: Any, prefix: str, compression: str | None) -> None:
    url = f"{prefix}/records.tfrecord"
    records = [bytes([i % 256]) * (i * 37 % 500) for i in range(300)]
    with rf.TFRecordWriter(url, compression) as w:
        offsets = w.write_many(records)
    with rf.TFRecordWriter(f"{prefix}/local.tfrecord", compression) as w:
        assert w.write_many(records) == offsets
    assert list(rf.read_records(url)) == records
    assert rf.scan_records(url).records == len(records)
    # An exception inside the writer's block commits nothing.
    broken = f"{prefix}/never.tfrecord"
    with pytest.raises(RuntimeError), rf.TFRecordWriter(broken) as w:
        w.write(b"x" * 100)
        raise RuntimeError("stop")
    s3.invalidate_cache()
    assert not s3.exists(broken.split("://", 1)[1])
    if compression is None:
        # A damaged record: the error names the URL and the record's offset.
        data = bytearray(s3.cat_file(url.split("://", 1)[1]))
        data[offsets[100] + 20] ^= 0xFF
        s3.pipe_file(url.split("://", 1)[1], bytes(data))
        with pytest.raises(rf.CorruptRecordError) as e:
            list(rf.read_records(url))
        assert (e.value.path, e.value.offset) == (url, offsets[100])
        with pytest.raises(rf.CorruptRecordError) as e:
            rf.scan_records(url)
        assert (e.value.path, e.value.offset) == (url, offsets[100])


def test_random_access_names_a_compressed_remote_file_not_a_crc(
    s3: Any, prefix: str, tmp_path: Path
) -> None:
    # Bare remote files: compression is assumed from the first file until a file is read
    # by range, which then looks at its own first bytes (was: a length CRC mismatch).
    for name, compression in (("a", None), ("b", "gzip")):
        options = rf.WriteOptions(compression=compression)
        rf.write_dataset(
            {"id": np.arange(10) + (10 if name == "b" else 0)}, tmp_path / name, options=options
        )
        (shard,) = sorted((tmp_path / name).glob("*.tfrecord*"))
        s3.put(str(shard), f"{prefix}/{name}.tfrecord".split("://", 1)[1])
    ds = rf.open_dataset([f"{prefix}/a.tfrecord", f"{prefix}/b.tfrecord"])
    assert ds.take([3])["id"].tolist() == [3]
    for read in (lambda: ds.take([15]), lambda: ds[15], lambda: ds.take([2, 12])):
        with pytest.raises(TypeError, match=r"b\.tfrecord: random access .* gzip-compressed"):
            read()
    assert [int(r["id"]) for r in ds] == list(range(20))  # streamed reads detect each file
