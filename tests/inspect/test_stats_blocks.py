"""``stats`` describes plain Examples a block of records at a time (kinds summarised in
Rust, one decoded column per feature, NumPy over the numbers) and anything else a record
at a time: both give the same statistics. The oracle is the record-at-a-time path
(``_stats._FAST = False``), on records that take every branch: missing, empty and
kind-less features, NaN and infinities, int64 beyond float's exact range, labels, text
and image bytes, distinct values past the cap, kinds that change between blocks or
within one, SequenceExamples, records that are no Example, ``<x>/label`` beside
``<x>/text``, unprintable names, and blocks that end inside a file or span files."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import recordforge as rf
from recordforge.inspect import _stats

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
JPEGS = sorted((SHARED / "tiny_coco" / "val2017").glob("*.jpg"))[:6]


def _both(paths: Any, monkeypatch: pytest.MonkeyPatch, **kwargs: Any) -> tuple[Any, Any]:
    fast = rf.inspect.stats(paths, **kwargs)
    with monkeypatch.context() as m:
        m.setattr(_stats, "_FAST", False)
        slow = rf.inspect.stats(paths, **kwargs)
    return fast, slow


def _same(fast: Any, slow: Any) -> None:
    """Equal, the means and standard deviations to rounding (NumPy sums pairwise)."""
    a, b = dataclasses.asdict(fast), dataclasses.asdict(slow)
    for fa, fb in zip(a["features"], b["features"], strict=True):
        for key in ("mean", "std"):
            x = (fa["numbers"] or {}).pop(key, None)
            y = (fb["numbers"] or {}).pop(key, None)
            assert (x is None) == (y is None), (fa["name"], key)
            if x is not None:
                assert math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9), (fa["name"], key, x, y)
    assert a == b


def _table_records(n: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    words = [b"taxi", b"cash", b"", "caf\u00e9".encode(), b"\x00\xff bin"]
    out = []
    for i in range(n):
        ex: dict[str, Any] = {"label": int(rng.integers(0, 7))}
        if i % 3:
            ex["fare"] = float(rng.normal(10, 5))
        if i % 5 == 0:
            ex["fare"] = [math.nan, math.inf, -math.inf, 1.0][i % 4]
        if i % 7 != 3:
            ex["big"] = np.array(
                [int(rng.integers(-(1 << 62), 1 << 62)) for _ in range(i % 4)], np.int64
            )
        ex["word"] = [words[int(k)] for k in rng.integers(0, len(words), i % 3)]
        if not ex["word"]:
            ex["word"] = np.array([], np.bytes_)
        if i % 11 == 0:
            ex["word"] = np.array([], np.bytes_)  # present, empty
            ex["empty_ints"] = np.array([], np.int64)
            ex["kindless"] = np.array([], np.float32)  # decodes as an empty float32
        if i % 13 == 0:
            ex["many"] = rng.random(int(rng.integers(9, 40)), dtype=np.float32)
        ex["id"] = f"row-{i}".encode()  # distinct: past the cap of 10,000 in the big test
        out.append(rf.encode_example(ex))
    return out


def _write(path: Path, records: list[bytes]) -> str:
    with rf.TFRecordWriter(path) as w:
        for r in records:
            w.write(r)
    return str(path)


def test_table_records_over_several_blocks_and_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 2,500 + 700 records: blocks end inside the first file and span into the second.
    paths = [
        _write(tmp_path / "a.tfrecord", _table_records(2500, 1)),
        _write(tmp_path / "b.tfrecord", _table_records(700, 2)),
    ]
    fast, slow = _both(paths, monkeypatch)
    _same(fast, slow)
    by = {f.name: f for f in fast.features}
    assert fast.records == 3200 and by["label"].class_labels is not None
    assert by["fare"].numbers is not None and by["fare"].numbers["nan_or_inf"] > 0
    assert by["kindless"].kind == "(empty)" and by["word"].empty > 0
    assert by["fare"].missing > 0 and by["many"].missing > 0
    fast, slow = _both(paths, monkeypatch, max_records=1500)
    _same(fast, slow)
    assert fast.records == 1500


def test_distinct_values_past_the_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = [_write(tmp_path / "big.tfrecord", _table_records(10_300, 3))]
    fast, slow = _both(paths, monkeypatch)
    _same(fast, slow)
    assert {f.name: f for f in fast.features}["id"].distinct is None  # capped


def test_images_labels_and_the_records_that_go_one_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    jpegs = [p.read_bytes() for p in JPEGS]
    plain = [
        rf.encode_example({"image/encoded": jpegs[i % len(jpegs)], "label": i % 3})
        for i in range(40)
    ]
    paired = [  # <x>/label beside <x>/text: names paired record by record
        rf.encode_example(
            {
                "image/object/class/label": [1, 2],
                "image/object/class/text": [b"person", b"bicycle"],
                "label": i,
            }
        )
        for i in range(30)
    ]
    changing = [rf.encode_example({"x": 1}), rf.encode_example({"x": b"one"})] * 5
    sequences = [rf.encode_sequence_example({"id": i}, {"tok": [[1], [2, 3]]}) for i in range(9)]
    odd_names = [rf.encode_example({"a\nb": 1, "c": 2.5}) for _ in range(4)]
    garbage = [b"hello", b"\x0a\x05hello"]
    records = plain + paired + changing + sequences + odd_names + garbage + plain
    monkeypatch.setattr(_stats, "_BLOCK", 16)  # many blocks, of every kind and mixed
    paths = [_write(tmp_path / "mixed.tfrecord", records)]
    fast, slow = _both(paths, monkeypatch)
    _same(fast, slow)
    by = {(f.part, f.name): f for f in fast.features}
    images = by[("feature", "image/encoded")].images
    assert images is not None and images["formats"] == {"JPEG": 80}
    names = by[("feature", "image/object/class/label")].class_labels
    assert names is not None and {d["name"] for d in names} == {"person", "bicycle"}
    assert ("feature_list", "tok") in by and by[("feature", "x")].kind == "int64"


def test_a_block_is_described_in_columns_where_it_can_be(monkeypatch: pytest.MonkeyPatch) -> None:
    # The fast path is taken (not only equal by falling back): a plain block is
    # described without a record decoded one at a time, a paired one is not.
    calls: list[int] = []
    monkeypatch.setattr(_stats._Described, "one", lambda self, data: calls.append(len(data)))
    seen: dict[tuple[str, str], Any] = {}
    described = _stats._Described(None, seen, _stats.collections.Counter())
    described.add(_table_records(100, 4))
    assert not calls and seen[("feature", "label")].present == 100
    paired = rf.encode_example({"a/label": [1], "a/text": [b"x"]})
    described.add([paired] * 3)
    assert len(calls) == 3


def test_blocks_are_bounded_in_bytes_and_sparse_names_go_one_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocks: list[tuple[int, int]] = []
    fast = _stats._Described.fast

    def spy(self: Any, block: list[bytes]) -> bool:
        taken = fast(self, block)
        blocks.append((sum(map(len, block)), int(taken)))
        return taken

    monkeypatch.setattr(_stats._Described, "fast", spy)
    monkeypatch.setattr(_stats, "_BLOCK_BYTES", 1 << 20)
    big = [rf.encode_example({"blob": bytes(300_000), "i": i}) for i in range(10)]
    path = _write(tmp_path / "big.tfrecord", big)
    assert rf.inspect.stats(path).records == 10
    # Blocks of 4 records (1.2 MB, the bound reached) and the 2 left; all in columns.
    assert [(n // 300_000, taken) for n, taken in blocks] == [(4, 1), (4, 1), (2, 1)]
    blocks.clear()
    sparse = [rf.encode_example({f"f{i}-{k}": k for k in range(5)}) for i in range(50)]
    path = _write(tmp_path / "sparse.tfrecord", sparse)
    fast_stats, slow_stats = _both(path, monkeypatch)
    _same(fast_stats, slow_stats)
    assert [taken for _, taken in blocks] == [0]  # 250 features, each in 1 record of 50
