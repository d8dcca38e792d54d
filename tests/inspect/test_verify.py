"""``verify``'s Rust path (framing, CRCs, parse and schema checked from a memory map)
finds exactly what the Python walk finds, problem for problem, on damaged files with
records that disagree with their schema."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import recordforge as rf
from recordforge import inspect
from recordforge.inspect import _verify

SCHEMA = rf.Schema(
    {
        "bbox": rf.FeatureSpec(dtype="float32", shape=(4,)),
        "label": rf.FeatureSpec(dtype="int64"),
        "tags": rf.FeatureSpec(dtype="bytes", shape=(None,)),
        "points": rf.FeatureSpec(dtype="float32", shape=(None, 2)),
        "poly": rf.FeatureSpec(dtype="float32", shape=(None, None)),
    }
)


def good(rng: random.Random) -> dict[str, Any]:
    lengths = [rng.randrange(0, 4) for _ in range(rng.randrange(0, 3))]
    return {
        "bbox": np.array([rng.random() for _ in range(4)], np.float32),
        "label": rng.randrange(-5, 100),
        "tags": np.array(
            [b"t" * rng.randrange(0, 3) for _ in range(rng.randrange(0, 3))], np.bytes_
        ),
        "points": np.zeros(2 * rng.randrange(0, 3), np.float32),
        "poly": np.zeros(sum(lengths), np.float32),
        "poly/row_lengths": np.array(lengths, np.int64),
    }


def bad(rng: random.Random, i: int) -> dict[str, Any] | bytes:
    row = good(rng)
    match i % 9:
        case 0:
            row["bbox"] = np.zeros(3, np.float32)  # wrong count
        case 1:
            row["label"] = "cat"  # wrong kind
        case 2:
            del row["label"]  # missing fixed
        case 3:
            row["points"] = np.zeros(3, np.float32)  # not a multiple of 2
        case 4:
            row["poly/row_lengths"] = np.array([9], np.int64)  # lengths disagree
        case 5:
            row["poly/row_lengths"] = [b"x"]  # lengths not int64
        case 6:
            row["tags"] = np.array([1.5], np.float32)  # float where bytes
        case 7:
            return b"\x0a\x05\x0a\x03"  # not an Example
        case _:
            row["label"] = np.zeros(0, np.float32)  # empty float list: kind-less
    return row


def write(path: Path, rows: list[dict[str, Any] | bytes]) -> list[int]:
    with rf.TFRecordWriter(str(path)) as w:
        return [w.write(r if isinstance(r, bytes) else rf.encode_example(r)) for r in rows]


def both(path: Path, schema: rf.Schema | None, monkeypatch: pytest.MonkeyPatch) -> Any:
    fast = inspect.verify(path, schema=schema)
    with monkeypatch.context() as m:
        m.setattr(_verify, "_verify_in_rust", lambda *_: None)
        slow = inspect.verify(path, schema=schema)
    return fast, slow


@pytest.mark.parametrize("seed", range(6))
def test_rust_verify_equals_python_walk(
    seed: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(seed)
    rows = [bad(rng, i) if rng.random() < 0.3 else good(rng) for i in range(300)]
    path = tmp_path / "data.tfrecord"
    offsets = write(path, rows)
    data = bytearray(path.read_bytes())
    for _ in range(seed):  # damage: flipped bytes in headers and payloads, zeroed runs
        at = rng.randrange(len(data))
        if rng.random() < 0.5:
            data[at] ^= 0xFF
        else:
            run = slice(at, at + rng.randrange(1, 200))
            data[run] = bytes(len(data[run]))
    if seed % 2:
        del data[-rng.randrange(1, 30) :]  # truncated tail
    path.write_bytes(bytes(data))
    for schema in (None, SCHEMA):
        fast, slow = both(path, schema, monkeypatch)
        assert fast.problems == slow.problems
        assert fast.records == slow.records
        assert fast.files == slow.files
    kinds = {p.kind for p in fast.problems}
    assert {"schema", "parse"} <= kinds, kinds
    if seed == 0:
        assert kinds == {"schema", "parse"}
        assert all(p.offset in offsets for p in fast.problems)


def test_rust_verify_clean_and_empty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(1)
    path = tmp_path / "clean.tfrecord"
    write(path, [good(rng) for _ in range(50)])
    fast, slow = both(path, SCHEMA, monkeypatch)
    assert fast.ok and fast.records == 50 and fast == slow
    empty = tmp_path / "empty.tfrecord"
    empty.write_bytes(b"")
    fast, slow = both(empty, None, monkeypatch)
    assert fast == slow and fast.ok and fast.records == 0


def test_verify_file_result_is_named(tmp_path: Path) -> None:
    path = tmp_path / "kinds.tfrecord"
    write(path, [{"b": b"x", "f": np.zeros(2, np.float32), "i": [1, 2, 3]}, {"i": 4}])
    names = ["b", "f", "i", "absent"]
    found = rf._core.verify_file(str(path), names, [False, False, True, False], 1, True)
    assert len(found.offsets) == len(found.sizes) == 2 and found.crc_ok.all()
    assert found.damage == [] and found.errors == [] and found.crc32c is not None
    kinds = found.kinds.reshape(2, len(names))
    table = rf._core.VerifiedFile.KINDS
    assert [table.get(int(k), int(k)) for k in kinds[0]] == ["bytes", "float32", "int64", -1]
    assert int(kinds[1, 0]) == rf._core.VerifiedFile.MISSING
    assert found.counts.reshape(2, len(names))[0].tolist() == [1, 2, 3, 0]
    assert found.sums.reshape(2, len(names))[:, 2].tolist() == [6, 4]
    assert sorted(table.values()) == ["bytes", "float32", "int64"]  # FeatureSpec kinds


def test_sequence_examples_take_the_python_walk(tmp_path: Path) -> None:
    path = tmp_path / "seq.tfrecord"
    with rf.TFRecordWriter(str(path)) as w:
        for i in range(3):
            w.write(rf.encode_sequence_example({"id": i}, {"x": [[1.0], [2.0]]}))
    result = inspect.verify(path)
    assert result.ok and result.files[0].record_type == "SequenceExample"
