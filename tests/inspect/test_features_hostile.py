"""Records of very many features (issue 13): a record of a million one-value features
decodes in about two seconds, but ``head``, ``info`` and ``stats`` spent minutes on it
(rich laid out a table row per feature at ~1 ms each; ``stats`` made NumPy calls and
five Counters per feature) and gigabytes of memory.

Now a record of more than ``max_features`` (default 100,000) features is a problem that
names it, counted before anything is decoded; below the limit the tables show the first
1,000 rows and say how many more there are (``--json`` has them all), and the per-feature
work is plain Python (no NumPy call, no Counter) and each record is decoded once.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from helpers import ld, varint

import recordforge as rf
from recordforge.cli.__main__ import main as cli


def wide_record(n: int) -> bytes:
    """An Example of ``n`` int64 features ``f0``..``f{n-1}``, one value each."""
    return ld(
        1, b"".join(ld(1, ld(1, b"f%d" % i) + ld(2, ld(3, ld(1, varint(i))))) for i in range(n))
    )


@pytest.fixture(scope="module")
def million(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("wide") / "million.tfrecord"
    with rf.TFRecordWriter(path) as w:
        w.write(wide_record(1_000_000))
    return path


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("wide") / "wide.tfrecord"
    with rf.TFRecordWriter(path) as w:
        w.write(rf.encode_example({"id": 1}))
        w.write(wide_record(150_000))
    return path


@pytest.mark.parametrize("command", ["head", "info", "stats"])
def test_a_million_features_are_refused_quickly(
    million: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    assert cli([command, str(million)]) == 1
    elapsed = time.monotonic() - started
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert (
        "record 0 at byte offset 0: 1,000,000 features, more than the limit of 100,000 "
        "(max_features, --max-features): not described" in out
    )
    assert elapsed < 20, f"{command}: {elapsed:.1f} s"


def test_count_features_counts_without_decoding() -> None:
    assert rf._core.count_features(wide_record(1000)) == 1000
    sequence = rf.encode_sequence_example({"a": 1, "b": 2}, {"c": [[1], [2]]})
    assert rf._core.count_features(sequence) == 3
    assert rf._core.count_features(b"\xff\xff") == 0


def test_the_limit_is_settable(wide: Path, tmp_path: Path) -> None:
    result = rf.inspect.stats(wide)
    assert result.records == 1 and result.problems[0].record == 1
    assert "150,000 features" in result.problems[0].message
    assert [f.name for f in result.features] == ["id"]
    head = rf.inspect.head(wide, max_features=200_000)
    assert len(head.records) == 2 and len(head.records[1].features) == 150_000
    assert head.records[1].record_type == "Example" and head.records[1].raw is None
    info = rf.inspect.info(wide, max_features=200_000)
    assert len(info.features) == 150_001 and not info.problems


@pytest.mark.parametrize("command", ["head", "info", "stats"])
def test_tables_show_the_first_rows_and_say_how_many_more(
    wide: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    assert cli([command, "--max-features", "200000", str(wide)]) == 0
    elapsed = time.monotonic() - started
    out = capsys.readouterr().out
    more = 149_000 if command == "head" else 149_001
    assert f"... and {more:,} more features" in out
    assert "(not an Example)" not in out
    assert elapsed < 60, f"{command}: {elapsed:.1f} s"


@pytest.mark.slow
def test_json_has_every_feature(wide: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["info", "--json", "--max-features", "200000", str(wide)]) == 0
    assert len(json.loads(capsys.readouterr().out)["features"]) == 150_001
