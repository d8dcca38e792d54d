"""The one shard cut rule: ``shard_starts`` (what Beam plans with) places shards where
the local writer cuts them, for record counts and byte limits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import recordforge as rf
from recordforge.sharding import (
    ShardFill,
    ShardPlanner,
    WriteOptions,
    frame_sizes,
    shard_bounds,
    shard_starts,
)


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


def _plan(planner: ShardPlanner, items: list[list[int]]) -> list[tuple[int, int]]:
    starts = []
    for position, lengths in enumerate(items):
        starts += planner.add(position, np.asarray(lengths, dtype=np.int64) + 16)
    return starts


def _global(items: list[list[int]], starts: list[tuple[int, int]]) -> list[int]:
    """Shard starts as record numbers over the whole split."""
    before = np.cumsum([0, *(len(lengths) for lengths in items)])
    return [int(before[position]) + record for position, record in starts]


@pytest.mark.parametrize("options", [{"max_bytes": 300}, {"max_records": 4}, {"max_bytes": 40}])
def test_planner_item_by_item_cuts_where_the_whole_split_is_cut(options: dict[str, int]) -> None:
    rng = np.random.default_rng(1)
    items = [rng.integers(0, 80, rng.integers(0, 9)).tolist() for _ in range(60)]
    flat = np.asarray([n for lengths in items for n in lengths], dtype=np.int64) + 16
    planner = ShardPlanner(WriteOptions(**options))  # type: ignore[arg-type]
    starts = _plan(planner, items)
    assert [0, *_global(items, starts)] == shard_starts(flat, WriteOptions(**options)).tolist()  # type: ignore[arg-type]
    assert planner.index == len(starts) and planner.finish() == 1


def test_planner_resumes_mid_item_where_it_stopped() -> None:
    options = WriteOptions(max_records=3)
    items = [[5] * 4, [5] * 7, [5] * 2]
    whole = _plan(ShardPlanner(options), items)
    assert whole == [(0, 3), (1, 2), (1, 5), (2, 1)]
    # Killed after the shard that ended at (1, 2): 2 shards and 6 records journaled.
    resumed = ShardPlanner(options, shards=2, records=6)
    frames = [np.asarray(lengths, dtype=np.int64) + 16 for lengths in items]
    assert resumed.add(1, frames[1], first=2) + resumed.add(2, frames[2]) == whole[2:]
    assert (resumed.index, resumed.records, resumed.finish()) == (4, 1, 1)


def test_planner_with_item_and_record_bounds() -> None:
    options = WriteOptions(num_shards=3)
    items = [[1, 1], [], [1, 1, 1, 1], [1]]
    by_items = ShardPlanner(options, item_bounds=shard_bounds(len(items), 3))
    assert _plan(by_items, items) == [(1, 0), (2, 0)] and by_items.finish() == 1
    by_records = ShardPlanner(options, record_bounds=shard_bounds(7, 3))  # [2, 4, 7]
    assert _plan(by_records, items) == [(2, 0), (2, 2)] and by_records.finish() == 1
    # Fewer records than shards: empty shards (bounds [0, 1, 1, 2]: shards 0 and 2).
    few = ShardPlanner(WriteOptions(num_shards=4), record_bounds=shard_bounds(2, 4))
    assert _plan(few, [[1], [1]]) == [(0, 0), (1, 0), (1, 0)]
    assert few.index == 3 and few.finish() == 1
    # Records fewer than counted (rows rejected): the shards left are completed empty.
    short = ShardPlanner(options, record_bounds=shard_bounds(9, 3))
    assert _plan(short, [[1, 1, 1, 1]]) == [(0, 3)] and short.finish() == 2
    with pytest.raises(ValueError, match="item_bounds or record_bounds"):
        ShardPlanner(options)


def test_sizes_in_whole_bytes_are_exact() -> None:
    """A size given in whole bytes is read exactly (it went through a float, which holds
    53 bits: 2**64 - 1 became 2**64, and --max-record-bytes then failed with an
    OverflowError traceback)."""
    from recordforge.sharding import parse_size

    assert parse_size("18446744073709551615") == 2**64 - 1
    assert parse_size("9007199254740993") == 2**53 + 1
    assert parse_size("3GiB") == 3 << 30
    assert parse_size("1.5GB") == 1_500_000_000
    assert parse_size("0.5KiB") == 512


@pytest.mark.parametrize("value", ["18446744073709551616", "99999999999999999999999"])
def test_a_record_limit_past_u64_is_refused_by_the_cli(value: str) -> None:
    from helpers import cli

    done = cli("count", "--max-record-bytes", value, "/nonexistent.tfrecord")
    assert done.returncode == 2, done.stderr
    assert "must be below 2**64 bytes" in done.stderr
    assert "Traceback" not in done.stderr
