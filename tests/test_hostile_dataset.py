"""Issue 13, hostile and damaged input read through ``rf.open_dataset``: memory held by
dropped datasets, compression detected from the bytes, damaged bare files with
``on_corrupt="skip"``, lists of dataset directories and Grain batches of ragged
features."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np

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
