"""The one shard cut rule: ``shard_starts`` (what Beam plans with) places shards where
the local writer cuts them, for record counts and byte limits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import recordforge as rf
from recordforge.sharding import ShardFill, WriteOptions, frame_sizes, shard_starts


def _local_shard_records(tmp_path: Path, records: list[bytes], **options: object) -> list[int]:
    manifest = rf.write_dataset(records, tmp_path, schema=rf.Schema({}), **options)
    return [s.records for s in manifest.splits["train"]]


@pytest.mark.parametrize(
    ("lengths", "options"),
    [
        ([], {"max_bytes": 100}),
        ([10] * 7, {"max_bytes": 100}),
        ([500, 1, 1, 500, 1], {"max_bytes": 100}),  # a record over the limit: alone
        ([3] * 300, {"max_bytes": 2000}),  # shards longer than the first windows
        ([3, 300] * 80, {"max_bytes": 1000}),
        ([5] * 50, {"max_records": 7}),
        ([5] * 49, {"max_records": 7}),
    ],
)
def test_shard_starts_are_the_local_writers_cuts(
    tmp_path: Path, lengths: list[int], options: dict[str, object]
) -> None:
    records = [b"x" * n for n in lengths]
    starts = shard_starts(frame_sizes(records), WriteOptions(**options)).tolist()
    ends = [*starts[1:], len(records)]
    planned = [b - a for a, b in zip(starts, ends, strict=True)]
    assert planned == _local_shard_records(tmp_path, records, **options)


def test_random_sizes_and_limits() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        sizes = rng.integers(16, 400, size=int(rng.integers(0, 2000))).astype(np.int64)
        options = WriteOptions(max_bytes=int(rng.integers(16, 20_000)))
        fill, expected = ShardFill(options), [0]
        for k, size in enumerate(sizes.tolist()):  # one check per record
            if fill.full(size):
                expected.append(k)
                fill.clear()
            fill.add(np.array([size]))
        assert shard_starts(sizes, options).tolist() == expected
