"""The conversion on Apache Beam (in-process runner) against the local writer: the same
files, records, manifest; retried shard writes; ReadDataset; the CLI's --runner beam."""

from __future__ import annotations

import doctest
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import recordforge as rf
from recordforge.sharding import shard_bounds

beam = pytest.importorskip("apache_beam")

from apache_beam.testing.util import assert_that, equal_to  # noqa: E402

import recordforge._beam_plan as beam_plan  # noqa: E402
import recordforge._beam_write as bw  # noqa: E402
import recordforge.beam as rfbeam  # noqa: E402
from recordforge._beam_plan import plan_split  # noqa: E402
from recordforge.cli.__main__ import main  # noqa: E402
from recordforge.sources.coco import CocoSource  # noqa: E402
from recordforge.sources.images import ImageFolderSource  # noqa: E402
from recordforge.sources.table import TableSource  # noqa: E402
from recordforge.splits import SplitSources  # noqa: E402
from recordforge.writer import write_source  # noqa: E402


def _digests(out: Path) -> list[str]:
    manifest = rf.Manifest.load(out)
    return sorted(
        hashlib.sha256(r).hexdigest()
        for shards in manifest.splits.values()
        for s in shards
        for r in rf.read_records(out / s.file)
    )


def _files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def _manifest_without_tool(out: Path) -> dict[str, Any]:
    data = json.loads((out / "dataset.json").read_text())
    data.pop("tool")
    return data  # type: ignore[no-any-return]


def _assert_same(local: Path, on_beam: Path) -> None:
    """Beam's output equals the local writer's: as a multiset of records, in the
    manifest (schema, shards, report), and byte for byte, every file (dataset.json
    included)."""
    assert _digests(on_beam) == _digests(local)
    assert _manifest_without_tool(on_beam) == _manifest_without_tool(local)
    assert _files(on_beam) == _files(local)
    assert rf.inspect.verify(on_beam).ok
    leftovers = [p.name for p in on_beam.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def _local(source: Any, out: Path, **kwargs: Any) -> rf.Manifest:
    return write_source(source, out, **kwargs)


@pytest.fixture(scope="module")
def coco(shared_data: Path) -> dict[str, Path]:
    root = shared_data / "tiny_coco"
    return {
        "annotations": root / "annotations" / "instances_val2017.json",
        "images": root / "val2017",
    }


@pytest.mark.parametrize("module", [rfbeam, beam_plan], ids=lambda m: m.__name__)
def test_module_doctest(module: Any) -> None:
    test = doctest.DocTestParser().get_doctest(module.__doc__ or "", {}, module.__name__, None, 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    assert runner.summarize(verbose=False).failed == 0


@pytest.mark.parametrize(
    ("per", "options"),
    [
        ("image", {}),  # max_bytes 256MB: one shard
        ("image", {"max_bytes": "1MB", "shuffle": True, "seed": 7, "index": True}),
        ("annotation", {"max_records": 64}),  # images' records straddle shards
        ("annotation", {"num_shards": 5, "shuffle": True, "seed": 3, "compression": "gzip"}),
        ("image", {"num_shards": 64}),  # more shards than images: empty shards
    ],
)
def test_coco_on_beam_equals_local(
    coco: dict[str, Path], tmp_path: Path, per: str, options: dict[str, Any]
) -> None:
    source = CocoSource.from_files(coco["annotations"], coco["images"], per=per)
    local = _local(source, tmp_path / "local", **options)
    manifest = rfbeam.convert(source, tmp_path / "beam", **options)
    assert manifest.records() == local.records() > 0
    _assert_same(tmp_path / "local", tmp_path / "beam")


@pytest.fixture(scope="module")
def coco_splits(tiny: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny COCO's instances cut in two annotation files: a train and a val split."""
    whole = json.loads(tiny["annotations"].read_text())
    root = tmp_path_factory.mktemp("coco_splits")
    out = {}
    for name, pick in (("train", lambda i: i % 3 != 0), ("val", lambda i: i % 3 == 0)):
        images = [im for i, im in enumerate(whole["images"]) if pick(i)]
        ids = {im["id"] for im in images}
        part = dict(whole, images=images)
        part["annotations"] = [a for a in whole["annotations"] if a["image_id"] in ids]
        out[name] = root / f"instances_{name}.json"
        out[name].write_text(json.dumps(part))
    return out


@pytest.mark.parametrize(
    ("per", "options"),
    [
        ("image", {"max_records": 7, "shuffle": True, "seed": 4, "index": True}),
        ("annotation", {"num_shards": 3}),
        ("annotation", {"max_bytes": "1MB", "on_error": "skip"}),
    ],
)
def test_coco_splits_in_one_pipeline(
    coco_splits: dict[str, Path],
    tiny: dict[str, Path],
    tmp_path: Path,
    per: str,
    options: dict[str, Any],
) -> None:
    """Two splits written by one pipeline: the local writer's files and dataset.json
    (both splits; with on_error="skip", images missing from the folder are reported
    from both splits in the local writer's order)."""
    images = tiny["images"]
    if options.get("on_error") == "skip":
        images = tmp_path / "images"
        images.mkdir()
        for f in sorted(tiny["images"].iterdir())[::4]:
            (images / f.name).write_bytes(f.read_bytes())

    def sources() -> SplitSources:
        return SplitSources(
            {n: CocoSource.from_files(a, images, per=per) for n, a in coco_splits.items()}
        )

    local = sources().write(tmp_path / "local", **options)
    on_beam = rfbeam.convert(sources(), tmp_path / "beam", **options)
    assert list(on_beam.splits) == ["train", "val"]
    assert all(on_beam.splits[n] for n in ("train", "val"))
    assert on_beam.records() == local.records() > 0
    if options.get("on_error") == "skip":
        assert len(on_beam.report["skipped"]) > 20
    _assert_same(tmp_path / "local", tmp_path / "beam")


def test_write_dataset_splits_of_triples(tmp_path: Path) -> None:
    """WriteDataset with ``splits``: (split, index, item) triples, one split empty."""
    rows = {"a": [{"id": i} for i in range(30)], "b": [], "c": [{"id": -i} for i in range(5)]}
    options = {"max_records": 4, "shuffle": True, "seed": 9}
    rf.write_dataset(splits=rows, out=tmp_path / "local", **options)
    triples = [(name, i, row) for name, split in rows.items() for i, row in enumerate(split)]
    with beam.Pipeline(runner=rfbeam.in_process_runner()) as p:
        _ = (
            p
            | beam.Create(triples)
            | rfbeam.WriteDataset(tmp_path / "beam", splits=list(rows), **options)
        )
    _assert_same(tmp_path / "local", tmp_path / "beam")


def test_coco_skipped_items_reported_from_all_workers(
    coco: dict[str, Path], tmp_path: Path
) -> None:
    """Images removed from the folder are skipped on whichever worker meets them; the
    report lists them all, in item order, as the local writer does."""
    images = tmp_path / "images"
    images.mkdir()
    files = sorted(coco["images"].iterdir())
    for f in files[::3]:
        (images / f.name).write_bytes(f.read_bytes())
    source = CocoSource.from_files(coco["annotations"], images, per="image")
    local = _local(source, tmp_path / "local", on_error="skip", num_shards=4)
    on_beam = rfbeam.convert(source, tmp_path / "beam", on_error="skip", num_shards=4)
    assert len(on_beam.report["skipped"]) == len(local.report["skipped"]) > 20
    _assert_same(tmp_path / "local", tmp_path / "beam")


@pytest.mark.parametrize(
    "options",
    [{"max_records": 4000}, {"num_shards": 3, "shuffle": True, "seed": 11}, {"max_bytes": "1MB"}],
)
def test_taxi_csv_on_beam_equals_local(
    shared_data: Path, tmp_path: Path, options: dict[str, Any]
) -> None:
    csv = shared_data / "tfx_chicago_taxi" / "data.csv"
    source = TableSource(csv, batch_size=1000)
    local = _local(source, tmp_path / "local", **options)
    source = TableSource(csv, batch_size=1000)
    on_beam = rfbeam.convert(source, tmp_path / "beam", **options)
    assert on_beam.records() == local.records() == 15_000
    _assert_same(tmp_path / "local", tmp_path / "beam")
    info = rf.inspect.info(tmp_path / "beam")
    assert info is not None


@pytest.fixture(scope="module")
def tables(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The first 3,000 taxi rows as CSV (the file's own lines), Parquet (row groups of
    400 rows) and JSONL."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    root = tmp_path_factory.mktemp("tables")
    lines = (shared_data / "tfx_chicago_taxi" / "data.csv").read_text().splitlines(True)
    (root / "taxi.csv").write_text("".join(lines[:3001]))
    table = pacsv.read_csv(root / "taxi.csv")
    assert table.num_rows == 3000
    pq.write_table(table, root / "taxi.parquet", row_group_size=400)
    rows = table.to_pylist()
    (root / "taxi.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert pa is not None
    return {fmt: root / f"taxi.{fmt}" for fmt in ("csv", "parquet", "jsonl")}


def _table(path: Path) -> TableSource:
    """Many parts: byte ranges of ~40 kB (CSV, JSONL), runs of 800 rows (Parquet)."""
    return TableSource(path, batch_size=300, part_bytes=40_000, part_rows=800)


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
@pytest.mark.parametrize(
    "options",
    [
        {"max_records": 700, "shuffle": True, "seed": 5},
        {"num_shards": 4},  # at row counts: parts straddle shards
        {"max_bytes": "150kB", "index": True},
    ],
    ids=["max_records-shuffle", "num_shards", "max_bytes"],
)
def test_tables_on_beam_equal_local(
    tables: dict[str, Path], tmp_path: Path, fmt: str, options: dict[str, Any]
) -> None:
    """A table's items are its parts: each worker reads its own (no row is read where
    the items are enumerated); the files are the local writer's."""
    source = _table(tables[fmt])
    parts = source.items()
    assert len(parts) >= 3
    local = _local(source, tmp_path / "local", **options)
    on_beam = rfbeam.convert(_table(tables[fmt]), tmp_path / "beam", **options)
    assert on_beam.records() == local.records() == 3000
    if "num_shards" in options:
        assert [s.records for s in on_beam.splits["train"]] == [750] * 4
    _assert_same(tmp_path / "local", tmp_path / "beam")


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_table_part_in_many_shards(tables: dict[str, Path], tmp_path: Path, fmt: str) -> None:
    """One part (the whole file) cut into 8 shards: converted once, its records sent to
    the 8 shard writers."""
    options = {"max_records": 400, "index": True, "shuffle": True}
    local = _local(TableSource(tables[fmt]), tmp_path / "local", **options)
    on_beam = rfbeam.convert(TableSource(tables[fmt]), tmp_path / "beam", **options)
    assert [s.records for s in on_beam.splits["train"]] == [400] * 7 + [200]
    assert on_beam.records() == local.records()
    _assert_same(tmp_path / "local", tmp_path / "beam")


def test_table_rejected_rows_in_straddling_part(tmp_path: Path) -> None:
    """Rows rejected inside a part that straddles shards are reported once, in order."""
    lines = ["id,name"] + [f"{i},n{i}" if i % 7 else f"x{i},bad" for i in range(40)]
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    schema = rf.Schema(
        {"id": rf.FeatureSpec(dtype="int64"), "name": rf.FeatureSpec(dtype="string")}
    )

    def source() -> TableSource:
        return TableSource(tmp_path / "t.csv", schema=schema, batch_size=8)

    options = {"max_records": 5, "on_error": "skip"}
    local = _local(source(), tmp_path / "local", **options)
    on_beam = rfbeam.convert(source(), tmp_path / "beam", **options)
    assert len(on_beam.report["skipped"]) == len(local.report["skipped"]) == 6
    assert on_beam.records() == 34
    _assert_same(tmp_path / "local", tmp_path / "beam")


def test_table_splits_on_beam_equal_local(tables: dict[str, Path], tmp_path: Path) -> None:
    """A CSV and a Parquet file as two splits of one dataset."""

    def sources() -> SplitSources:
        return SplitSources({"train": _table(tables["csv"]), "test": _table(tables["parquet"])})

    for name, options in [
        ("fill", {"max_records": 900, "shuffle": True, "seed": 1}),
        # Each split cut at its own row counts, locally as on Beam.
        ("counted", {"num_shards": 3}),
    ]:
        local = sources().write(tmp_path / name / "local", **options)
        on_beam = rfbeam.convert(sources(), tmp_path / name / "beam", **options)
        assert list(on_beam.splits) == ["train", "test"] == list(local.splits)
        _assert_same(tmp_path / name / "local", tmp_path / name / "beam")
    rows = {name: [s.records for s in shards] for name, shards in local.splits.items()}
    assert rows == {
        name: np.diff([0, *shard_bounds(sum(counts), 3)]).tolist() for name, counts in rows.items()
    }


@pytest.mark.parametrize(
    "options", [{}, {"max_records": 7, "shuffle": True, "seed": 2}, {"num_shards": 3}]
)
def test_image_folder_on_beam_equals_local(
    tiny: dict[str, Path], tmp_path: Path, options: dict[str, Any]
) -> None:
    root = tmp_path / "folder"
    for i, f in enumerate(sorted(tiny["images"].iterdir())[:24]):
        (root / ("cat", "dog", "owl")[i % 3]).mkdir(parents=True, exist_ok=True)
        (root / ("cat", "dog", "owl")[i % 3] / f.name).write_bytes(f.read_bytes())
    local = _local(ImageFolderSource(str(root)), tmp_path / "local", **options)
    on_beam = rfbeam.convert(ImageFolderSource(str(root)), tmp_path / "beam", **options)
    assert on_beam.records() == local.records() == 24
    _assert_same(tmp_path / "local", tmp_path / "beam")


def test_plain_dicts_without_schema(tmp_path: Path) -> None:
    """WriteDataset on (position, item) pairs of feature dicts: schema inferred from the
    files, as locally."""
    rows = [{"id": i, "tags": [f"t{j}" for j in range(i % 3 + 1)]} for i in range(50)]
    rf.write_dataset(rows, tmp_path / "local", max_records=8, shuffle=True, seed=2)
    with beam.Pipeline(runner=rfbeam.in_process_runner()) as p:
        _ = (
            p
            | beam.Create(list(enumerate(rows)))
            | rfbeam.WriteDataset(tmp_path / "beam", max_records=8, shuffle=True, seed=2)
        )
    _assert_same(tmp_path / "local", tmp_path / "beam")


def test_empty_input(tmp_path: Path) -> None:
    rf.write_dataset([], tmp_path / "local", schema=rf.Schema({}))
    with beam.Pipeline(runner=rfbeam.in_process_runner()) as p:
        _ = p | beam.Create([]) | rfbeam.WriteDataset(tmp_path / "beam", schema=rf.Schema({}))
    _assert_same(tmp_path / "local", tmp_path / "beam")


class _FailOnce:
    """to_records that raises once, part-way through a shard, then works: what a worker
    crash in the middle of a bundle looks like to the files."""

    def __init__(self, flag: Path, after: int) -> None:
        self.flag, self.after, self.seen = flag, after, 0

    def __call__(self, item: dict[str, Any]) -> tuple[bytes, ...]:
        self.seen += 1
        if self.seen > self.after and not self.flag.exists():
            self.flag.write_text("failed once")
            raise RuntimeError("injected failure")
        return (rf.encode_example(item),)


def test_retried_shard_write_leaves_no_duplicate_or_partial(tmp_path: Path) -> None:
    """The in-process runner does not retry bundles, so the retry is played out here:
    the shard-writing step runs, fails half-way through a shard (leaving its temporary
    file), runs again, and runs a third time as a duplicate attempt would; the final
    step then writes a manifest whose files are exactly the local writer's."""
    rows = [{"id": i} for i in range(40)]
    rf.write_dataset(
        rows,
        tmp_path / "local",
        num_shards=4,
        schema=rf.Schema({"id": rf.FeatureSpec(dtype="int64")}),
    )
    out = tmp_path / "beam"
    options = rf.WriteOptions(num_shards=4)
    flaky = _FailOnce(tmp_path / "flag", after=15)
    bw.prepare(str(out), False, {"test": 1})
    shipped = bw.ship(str(out), {"to_records": flaky})
    target = bw.Target(str(out), ("train",), options, shipped, "raise")
    plan = plan_split(options, len(rows))
    by_shard: dict[int, list[Any]] = {}
    for position, row in enumerate(rows):
        for shard, lo, hi in plan.assign(position):
            by_shard.setdefault(shard, []).append((position, row, lo, hi, None))
    results = {}
    with pytest.raises(RuntimeError, match="injected"):
        for shard, entries in by_shard.items():
            results[shard] = bw.write_shard(target, "train", plan, shard, entries)
    assert sorted(results) == [0]  # shard 1 failed part-way
    partial = [p.name for p in out.iterdir() if p.name.endswith(".partial")]
    finals = sorted(p.name for p in out.iterdir() if p.name.endswith(".tfrecord"))
    assert finals == ["train-00000-of-00004.tfrecord"]
    # The retry, and a duplicate attempt of every shard (a speculative or re-run bundle).
    for _ in range(2):
        for shard, entries in by_shard.items():
            results[shard] = bw.write_shard(target, "train", plan, shard, entries)
    finish = bw.Finish(target, rf.Schema({"id": rf.FeatureSpec(dtype="int64")}), {}, {})
    bw.finalize(list(results.values()), finish, {"train": plan})
    assert not any(p.name.endswith(".partial") for p in out.iterdir()), partial
    _assert_same(tmp_path / "local", out)


def test_failed_pipeline_rerun_completes(tmp_path: Path) -> None:
    """A pipeline that fails in one bundle leaves no dataset.json; running it again into
    the same directory (same options) completes it, equal to the local output."""
    rows = [{"id": i} for i in range(30)]
    schema = rf.Schema({"id": rf.FeatureSpec(dtype="int64")})
    rf.write_dataset(rows, tmp_path / "local", num_shards=3, schema=schema)
    out = tmp_path / "beam"
    flaky = _FailOnce(tmp_path / "flag", after=5)
    for attempt in range(2):

        def run() -> None:
            with beam.Pipeline(runner=rfbeam.in_process_runner()) as p:
                _ = (
                    p
                    | beam.Create(list(enumerate(rows)))
                    | rfbeam.WriteDataset(out, num_shards=3, schema=schema, to_records=flaky)
                )

        if attempt == 0:
            with pytest.raises(Exception, match="injected"):
                run()
            assert not (out / "dataset.json").exists()
        else:
            run()
    _assert_same(tmp_path / "local", out)


def test_refuses_other_options_unfinished(tmp_path: Path) -> None:
    out = tmp_path / "beam"
    bw.prepare(str(out), False, {"options": 1})
    with pytest.raises(FileExistsError, match="other options"):
        bw.prepare(str(out), False, {"options": 2})
    bw.prepare(str(out), True, {"options": 2})


def test_read_dataset(tmp_path: Path) -> None:
    rows = [{"id": i, "name": f"n{i}"} for i in range(100)]
    rf.write_dataset(rows, tmp_path / "d", max_records=16)
    with beam.Pipeline(runner=rfbeam.in_process_runner()) as p:
        records = p | rfbeam.ReadDataset(tmp_path / "d", features=["id"])
        assert_that(records | beam.Map(lambda r: int(r["id"])), equal_to(list(range(100))))
        assert_that(records | beam.Map(lambda r: sorted(r)), equal_to([["id"]] * 100), "keys")


def test_cli_runner_beam(coco: dict[str, Path], tmp_path: Path) -> None:
    common = ["--annotations", str(coco["annotations"]), "--images", str(coco["images"])]
    common += ["--per", "annotation", "--max-records", "100", "--shuffle", "--seed", "5"]
    assert main(["convert", "coco", *common, "--out", str(tmp_path / "local")]) == 0
    args = ["convert", "coco", *common, "--out", str(tmp_path / "beam"), "--runner", "beam"]
    assert main([*args, "--", "--direct_num_workers=1"]) == 0
    _assert_same(tmp_path / "local", tmp_path / "beam")


def test_cli_runner_beam_two_splits(
    coco_splits: dict[str, Path], tiny: dict[str, Path], tmp_path: Path
) -> None:
    """``--split`` repeated, each with its own ``--annotations`` (one ``--images`` for
    both): one dataset, the same on Beam as locally."""
    common = ["--split", "train", "--annotations", str(coco_splits["train"])]
    common += ["--split", "val", "--annotations", str(coco_splits["val"])]
    common += ["--images", str(tiny["images"]), "--max-records", "9", "--shuffle", "--seed", "2"]
    assert main(["convert", "coco", *common, "--out", str(tmp_path / "local")]) == 0
    assert (
        main(["convert", "coco", *common, "--out", str(tmp_path / "beam"), "--runner", "beam"]) == 0
    )
    assert list(rf.Manifest.load(tmp_path / "beam").splits) == ["train", "val"]
    _assert_same(tmp_path / "local", tmp_path / "beam")


def test_cli_runner_beam_csv(shared_data: Path, tmp_path: Path) -> None:
    csv = str(shared_data / "tfx_chicago_taxi" / "data.csv")
    common = ["--num-shards", "4", "--shuffle", "--seed", "3"]
    assert main(["convert", "table", csv, *common, "--out", str(tmp_path / "local")]) == 0
    args = ["convert", "table", csv, *common, "--out", str(tmp_path / "beam")]
    assert main([*args, "--runner", "beam"]) == 0
    _assert_same(tmp_path / "local", tmp_path / "beam")


def test_beam_into_a_store_streams_each_shard_with_the_local_bytes(
    coco: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``convert`` on Beam into a URL (``memory://`` for the store) streams each shard
    to a temporary key and moves it: nothing is written locally and uploaded, and the
    objects equal the local writer's files, byte for byte, indexes included."""
    import fsspec

    from recordforge import _fs

    options: dict[str, Any] = {"max_records": 16, "index": True, "compression": "gzip"}
    source = CocoSource.from_files(coco["annotations"], coco["images"], per="image")
    _local(source, tmp_path / "local", **options)

    def no_upload(local: Any, path: Any) -> None:
        raise AssertionError(f"{path} written locally, then uploaded")

    monkeypatch.setattr(_fs, "upload", no_upload)
    url = "memory://beam-into-a-store/out"
    try:
        rfbeam.convert(source, url, **options)
        fs = fsspec.filesystem("memory")
        there = {
            p.rsplit("/", 1)[1]: fs.cat_file(p)
            for p in fs.ls("/beam-into-a-store/out", detail=False)
        }
        here = _files(tmp_path / "local")
        assert sorted(there) == sorted(here)  # no temporary key left
        for name, data in here.items():
            if name == "dataset.json":
                mine = json.loads(there[name])
                theirs = json.loads(data)
                mine.pop("tool"), theirs.pop("tool")
                assert mine == theirs
            else:
                assert there[name] == data, name
    finally:
        fsspec.filesystem("memory").rm("/beam-into-a-store", recursive=True)
