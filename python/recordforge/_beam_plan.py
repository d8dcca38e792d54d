"""Beam's shard plan: where each split's shards start, as ``(item position, record)``
cuts placed by the local writer's own planner (:class:`~recordforge.sharding.ShardPlanner`,
fed the items in order), and which shard(s) each item's records go to.

>>> from recordforge._beam_plan import plan_split
>>> from recordforge.sharding import WriteOptions
>>> plan = plan_split(WriteOptions(num_shards=2), 5)  # items 0-1 and 2-4: one pass
>>> plan.starts, plan.assign(1), plan.assign(2)
(((0, 0), (2, 0)), [(0, 0, None)], [(1, 0, None)])
>>> sizes = [(0, [40, 40, 40]), (1, []), (2, [40])]
>>> plan = plan_split(WriteOptions(max_records=2), 3, sizes)
>>> plan.starts, plan.expected, plan.assign(0)
(((0, 0), (0, 2)), (2, 2), [(0, 0, 2), (1, 2, None)])
>>> plan = plan_split(WriteOptions(num_shards=3), 3, sizes, num_records=4)
>>> plan.starts, plan.expected  # at record counts 1, 2 (inside item 0) and 4
(((0, 0), (0, 1), (0, 2)), (1, 1, 2))
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Iterable

import numpy as np

from recordforge.sharding import ShardPlanner, WriteOptions, shard_bounds

__all__ = ["BeamPlan", "plan_split"]


@dataclasses.dataclass(frozen=True)
class BeamPlan:
    """One split's shards: shard ``k`` holds the records from ``starts[k]`` (an ``(item
    position, record)`` pair, in the order the local writer writes them) up to
    ``starts[k + 1]``. ``expected``: each shard's record count, where it is known
    before the shards are written (planned from the records' sizes)."""

    starts: tuple[tuple[int, int], ...]
    expected: tuple[int, ...] | None = None

    @property
    def shards(self) -> int:
        return len(self.starts)

    def assign(self, position: int) -> list[tuple[int, int, int | None]]:
        """``(shard, first record, stop record)`` for each shard holding some of the item
        at ``position`` (``None``: to its last record); the first always starts at record
        0, so an item without records is still counted in one shard."""
        k = max(bisect.bisect_right(self.starts, (position, 0)) - 1, 0)
        out: list[tuple[int, int, int | None]] = []
        lo = 0
        while k + 1 < self.shards and self.starts[k + 1][0] == position:
            hi = self.starts[k + 1][1]
            if hi > lo or not out:
                out.append((k, lo, hi))
            lo, k = max(lo, hi), k + 1
        out.append((k, lo, None))
        return out


def plan_split(
    options: WriteOptions,
    total: int,
    measured: Iterable[tuple[int, np.ndarray]] | None = None,
    num_records: int | None = None,
) -> BeamPlan:
    """A split's shards, planned by the local writer's planner
    (:class:`~recordforge.sharding.ShardPlanner`) over its ``total`` items in order.
    ``measured``: ``(position, frame sizes)`` of every item (in any order); needed
    unless shards end at item counts (``num_shards`` without ``num_records``).
    ``num_records``: the records the split gives, known before converting it:
    ``num_shards`` then cuts at record counts."""
    n = options.num_shards
    if n and num_records is not None:
        planner = ShardPlanner(options, record_bounds=shard_bounds(num_records, n))
    elif n:
        planner = ShardPlanner(options, item_bounds=shard_bounds(total, n))
    else:
        planner = ShardPlanner(options)
    frames: list[np.ndarray] | None = None
    if measured is not None:
        ordered = sorted(measured, key=lambda m: m[0])
        if [m[0] for m in ordered] != list(range(total)):
            raise RuntimeError(f"measured item positions are not 0..{total - 1} once each")
        frames = [np.asarray(m[1], dtype=np.int64) for m in ordered]
    elif not n or num_records is not None:
        raise ValueError("shards planned from the records need every item measured")
    none = np.zeros(0, np.int64)
    starts = [(0, 0)]
    for position in range(total):
        starts += planner.add(position, frames[position] if frames is not None else none)
    # Shards the split completes at its end: the open one, then any empty ones.
    starts += [(total, 0)] * max(planner.finish() - 1, 0)
    if frames is None:
        return BeamPlan(starts=tuple(starts))
    first = np.concatenate([[0], np.cumsum([len(f) for f in frames])]).astype(np.int64)
    at = [int(first[p]) + r for p, r in starts] + [int(first[-1])]
    return BeamPlan(starts=tuple(starts), expected=tuple(np.diff(at).tolist()))
