"""write_dataset: sharding, naming, manifest, index files, resume after a crash, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import recordforge as rf


def rows(n: int) -> list[dict[str, Any]]:
    return [{"id": i, "text": f"row {i}" * (i % 7), "x": [float(i), 0.5]} for i in range(n)]


def ids(out: Path, manifest: rf.Manifest, split: str = "train") -> list[int]:
    return [
        int(rf.decode_example(r)["id"][0])
        for shard in manifest.splits[split]
        for r in rf.read_records(out / shard.file)
    ]


def listing(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


@pytest.mark.parametrize(
    ("kwargs", "counts"),
    [
        ({"max_records": 4}, [4, 4, 2]),
        ({"max_records": 10}, [10]),
        ({"num_shards": 3}, [3, 3, 4]),
        ({"num_shards": 12}, [0, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1]),
        ({}, [10]),
    ],
)
def test_sharding(tmp_path: Path, kwargs: dict[str, Any], counts: list[int]) -> None:
    manifest = rf.write_dataset(rows(10), tmp_path, **kwargs)
    assert [s.records for s in manifest.splits["train"]] == counts
    assert ids(tmp_path, manifest) == list(range(10))
    n = len(counts)
    assert [s.file for s in manifest.splits["train"]] == [
        f"train-{i:05d}-of-{n:05d}.tfrecord" for i in range(n)
    ]


def test_max_bytes_bounds_every_shard(tmp_path: Path) -> None:
    manifest = rf.write_dataset(rows(200), tmp_path, max_bytes="2KB")
    shards = manifest.splits["train"]
    assert len(shards) > 5 and all(s.bytes <= 2000 for s in shards)
    assert ids(tmp_path, manifest) == list(range(200))


def test_keras_template_splits_compression_and_manifest(tmp_path: Path) -> None:
    manifest = rf.write_dataset(
        splits={"train": rows(9), "validation": rows(3)},
        out=tmp_path,
        max_records=4,
        name_template="file_{index:02d}-{records}.{split}.tfrec",
        compression="gzip",
        source={"kind": "test"},
    )
    assert [s.file for s in manifest.splits["train"]] == [
        "file_00-4.train.tfrec",
        "file_01-4.train.tfrec",
        "file_02-1.train.tfrec",
    ]
    data = json.loads((tmp_path / "dataset.json").read_text())
    assert data["format_version"] == 1 and data["compression"] == "gzip"
    assert data["splits"]["validation"]["records"] == 3
    assert data["source"] == {"kind": "test"} and data["report"]["items"] == 12
    assert rf.Manifest.load(tmp_path) == manifest
    for shard in manifest.splits["train"]:
        path = tmp_path / shard.file
        assert path.read_bytes()[:2] == b"\x1f\x8b"
        assert shard.bytes == path.stat().st_size
        assert rf.scan_records(path).records == shard.records
    schema = manifest.schema
    assert schema is not None and schema["id"] == rf.FeatureSpec(dtype="int64")
    assert schema["x"] == rf.FeatureSpec(dtype="float32", shape=(2,))


def test_index_files_are_dali_format(tmp_path: Path) -> None:
    manifest = rf.write_dataset(rows(7), tmp_path, max_records=5, index=True)
    for shard in manifest.splits["train"]:
        lines = (tmp_path / f"{shard.file}.idx").read_text().splitlines()
        it = rf.read_records(tmp_path / shard.file)
        expected = [f"{it.offset} {len(r) + 16}" for r in it]
        assert lines == expected and len(lines) == shard.records


def test_columns_dataframe_like_and_shuffle(tmp_path: Path) -> None:
    columns = {"id": np.arange(50), "v": np.random.default_rng(0).random((50, 3))}
    a = rf.write_dataset(columns, tmp_path / "a", shuffle=True, seed=7, max_records=16)
    rf.write_dataset(columns, tmp_path / "b", shuffle=True, seed=7, max_records=16)
    c = rf.write_dataset(columns, tmp_path / "c", shuffle=True, seed=8, max_records=16)
    order = ids(tmp_path / "a", a)
    assert sorted(order) == list(range(50)) and order != list(range(50))
    assert listing(tmp_path / "a") == listing(tmp_path / "b")
    assert ids(tmp_path / "c", c) != order
    with pytest.raises(ValueError, match="different lengths"):
        rf.write_dataset({"a": np.arange(3), "b": np.arange(4)}, tmp_path / "d")


def test_refuses_foreign_directories_and_completed_datasets(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a recordforge dataset"):
        rf.write_dataset(rows(3), tmp_path)
    with pytest.raises(FileExistsError, match="not a recordforge dataset"):
        rf.write_dataset(rows(3), tmp_path, overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    out = tmp_path / "ds"
    rf.write_dataset(rows(3), out)
    with pytest.raises(FileExistsError, match="complete dataset"):
        rf.write_dataset(rows(3), out)
    manifest = rf.write_dataset(rows(5), out, overwrite=True)
    assert manifest.records() == 5 and len(list(out.iterdir())) == 2


class Crash(BaseException):
    """Not an Exception: like a KeyboardInterrupt, nothing in the writer may swallow it."""


def _flaky(fail_at: int) -> Any:
    def to_records(item: dict[str, Any]) -> tuple[bytes, ...]:
        if item["id"] == fail_at:
            raise Crash  # stands in for a crash mid-conversion
        return (rf.encode_example(item),)

    return to_records


def test_resume_after_interruption_gives_identical_output(tmp_path: Path) -> None:
    reference = tmp_path / "ref"
    rf.write_dataset(rows(23), reference, max_records=5, index=True)
    out = tmp_path / "out"
    with pytest.raises(Crash):
        rf.write_dataset(rows(23), out, max_records=5, index=True, to_records=_flaky(17))
    assert not (out / "dataset.json").exists()
    assert not any(p.name.endswith(".tfrecord") for p in out.iterdir())
    with pytest.raises(FileExistsError, match="other options"):
        rf.write_dataset(rows(23), out, max_records=6)
    rf.write_dataset(rows(23), out, max_records=5, index=True)
    assert listing(out) == listing(reference)


def test_items_straddling_shards_resume_mid_item(tmp_path: Path) -> None:
    armed = [False]

    def three(item: dict[str, Any]) -> tuple[bytes, ...]:
        if item["id"] == 6 and armed[0]:
            armed[0] = False
            raise Crash
        return tuple(rf.encode_example({**item, "k": k}) for k in range(3))

    reference = rf.write_dataset(rows(8), tmp_path / "ref", max_records=4, to_records=three)
    armed[0] = True
    with pytest.raises(Crash):
        rf.write_dataset(rows(8), tmp_path / "out", max_records=4, to_records=three)
    resumed = rf.write_dataset(rows(8), tmp_path / "out", max_records=4, to_records=three)
    assert resumed == reference
    assert listing(tmp_path / "out") == listing(tmp_path / "ref")


def test_skip_and_fail_report_items(tmp_path: Path) -> None:
    def strict(item: dict[str, Any]) -> tuple[bytes, ...]:
        if item["id"] % 4 == 1:
            raise rf.ItemError(f"row {item['id']}", "odd one out")
        return (rf.encode_example(item),)

    with pytest.raises(rf.ItemError, match="row 1: odd one out"):
        rf.write_dataset(rows(10), tmp_path / "fail", to_records=strict)
    manifest = rf.write_dataset(rows(10), tmp_path / "skip", to_records=strict, on_error="skip")
    assert manifest.records() == 7
    assert manifest.report["skipped"] == [
        {"item": f"row {i}", "reason": "odd one out"} for i in (1, 5, 9)
    ]


def test_one_error_vocabulary_for_writing_and_reading(tmp_path: Path) -> None:
    def strict(item: dict[str, Any]) -> tuple[bytes, ...]:
        if item["id"] == 3:
            raise rf.ItemError(f"row {item['id']}", "bad")
        return (rf.encode_example(item),)

    for word in ("raise", "fail"):  # "fail" (the CLI's first word) is "raise"
        with pytest.raises(rf.ItemError, match="row 3: bad"):
            rf.write_dataset(rows(5), tmp_path / word, to_records=strict, on_error=word)  # type: ignore[arg-type]
    for bad in ("ignore", None, "RAISE"):
        with pytest.raises(ValueError, match=r"on_error must be 'raise' or 'skip'"):
            rf.write_dataset(rows(5), tmp_path / "x", on_error=bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"on_corrupt must be 'raise' or 'skip'"):
            rf.open_dataset(tmp_path / "skip", on_corrupt=bad)  # type: ignore[arg-type]
    assert not (tmp_path / "x").exists()  # refused before the directory is made
    rf.write_dataset(rows(5), tmp_path / "skip", to_records=strict, on_error="skip")
    assert rf.open_dataset(tmp_path / "skip", on_corrupt="fail").on_corrupt == "raise"  # type: ignore[arg-type]


def test_option_validation(tmp_path: Path) -> None:
    for kwargs, message in [
        ({"max_records": 2, "num_shards": 2}, "at most one"),
        ({"max_records": 0}, ">= 1"),
        ({"max_bytes": "lots"}, "cannot read size"),
        ({"compression": "lz4"}, "compression"),
        ({"name_template": "{nope}.tfrecord"}, "bad name_template"),
        ({"name_template": "../x-{index}"}, "plain file names"),
    ]:
        with pytest.raises(ValueError, match=message):
            rf.WriteOptions(**kwargs)
    with pytest.raises(ValueError, match="length is known"):
        rf.write_dataset(iter(rows(3)), tmp_path, num_shards=2)


CRASHER = textwrap.dedent(
    """
    import sys, time
    import recordforge as rf

    def slow(item):
        if item["id"] >= 30:
            time.sleep(0.05)
        return (rf.encode_example(item),)

    rows = [{"id": i, "pad": b"x" * 1000} for i in range(150)]
    rf.write_dataset(rows, sys.argv[1], max_records=10, to_records=slow)
    """
)


@pytest.mark.slow
def test_sigkill_mid_conversion_then_resume(tmp_path: Path) -> None:
    script = tmp_path / "crasher.py"
    script.write_text(CRASHER)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, str(script), str(out)])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if len(list(out.glob(".train-*.shard"))) >= 4:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "dataset.json").exists()
    # No file under a final name, and every completed shard is whole.
    for p in out.iterdir():
        assert not p.name.endswith(".tfrecord"), p
        if p.name.endswith(".shard"):
            assert rf.scan_records(p).records == 10
    subprocess.run([sys.executable, str(script), str(out)], check=True)
    reference = tmp_path / "ref"
    subprocess.run([sys.executable, str(script), str(reference)], check=True)
    assert listing(out) == listing(reference)


def every_third_is_bad(item: dict[str, Any]) -> tuple[bytes, ...]:
    """Module level, so worker processes can unpickle it."""
    if item["id"] % 3 == 2:
        raise rf.ItemError(f"row {item['id']}", "third")
    return tuple(rf.encode_example({**item, "copy": k}) for k in range(item["id"] % 3 + 1))


def test_workers_do_not_change_the_output(tmp_path: Path) -> None:
    kwargs: dict[str, Any] = {
        "max_records": 7,
        "to_records": every_third_is_bad,
        "on_error": "skip",
        "index": True,
    }
    one = rf.write_dataset(rows(60), tmp_path / "one", workers=1, **kwargs)
    two = rf.write_dataset(rows(60), tmp_path / "two", workers=2, **kwargs)
    assert one == two and len(one.report["skipped"]) == 20
    assert listing(tmp_path / "one") == listing(tmp_path / "two")


def test_columns_take_the_batch_path_and_match_row_input(tmp_path: Path) -> None:
    n = 10_000
    rng = np.random.default_rng(1)
    columns = {"id": np.arange(n), "v": rng.random((n, 3)), "s": [f"s{i}" for i in range(n)]}
    as_rows = [{"id": i, "v": columns["v"][i], "s": columns["s"][i]} for i in range(n)]
    cols = rf.write_dataset(columns, tmp_path / "cols", max_records=3000)
    by_row = rf.write_dataset(as_rows, tmp_path / "rows", max_records=3000)
    shards = {k: v for k, v in listing(tmp_path / "cols").items() if k != "dataset.json"}
    assert shards == {k: v for k, v in listing(tmp_path / "rows").items() if k != "dataset.json"}
    assert cols.splits == by_row.splits and cols.report == by_row.report
    # The schema comes from the column types (no pass over the files): str is text.
    assert dict(cols.schema) == {
        "id": rf.FeatureSpec(dtype="int64"),
        "v": rf.FeatureSpec(dtype="float32", shape=(3,)),
        "s": rf.FeatureSpec(dtype="string"),
    }
    assert by_row.schema["s"].dtype == "bytes"


@pytest.mark.parametrize(
    "data",
    [
        [{"a": i, "b": float(i), "c": f"s{i}", "d": b"x" * i} for i in range(7)],
        [{"a": i} if i % 2 else {"a": i, "b": 1.5} for i in range(7)],  # b sometimes absent
        [{"b": 1}, {"a": np.zeros(0, np.float32), "b": 1}, {"c": b"z", "a": 1}],  # order
        [{"v": np.arange(i % 3, dtype=np.int64), "e": np.zeros(0, np.float32)} for i in range(7)],
        [rf.encode_example({"x": [i, i]}) for i in range(7)],
        [rf.encode_sequence_example({"y": i}, {"x": [[0.5]] * (i + 1)}) for i in range(7)],
    ],
    ids=["kinds", "absent", "order", "lengths", "records", "sequences"],
)
def test_schema_taken_while_writing_is_the_files_schema(tmp_path: Path, data: Any) -> None:
    # The schema is summarised as the records are written (no second read of the files);
    # two workers write without that summary, so their schema comes from the files.
    one = rf.write_dataset(data, tmp_path / "one", max_records=3)
    back = [r for s in one.splits["train"] for r in rf.read_records(tmp_path / "one" / s.file)]
    assert one.schema == rf.infer_sequence_schema(back)
    rf.write_dataset(data, tmp_path / "two", max_records=3, workers=2)
    assert listing(tmp_path / "one") == listing(tmp_path / "two")


def test_schema_errors_are_the_files_errors(tmp_path: Path) -> None:
    with pytest.raises(rf.SchemaError, match="int64 in one record, float32 in another"):
        rf.write_dataset([{"a": 1}, {"a": 1.5}], tmp_path / "clash")
    with pytest.raises(rf.DecodeError):
        rf.write_dataset([b"\xff\xff\xff"], tmp_path / "garbage")


def test_rows_are_not_read_back_for_their_schema(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import recordforge.writer

    def no_second_pass(*args: Any) -> None:
        raise AssertionError("the files were read again")

    monkeypatch.setattr(recordforge.writer, "_infer_from_files", no_second_pass)
    manifest = rf.write_dataset(rows(10), tmp_path / "out", max_records=4)
    assert sorted(manifest.schema) == ["id", "text", "x"]
