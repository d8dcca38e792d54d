"""Beam's shard plan: where each split's shards start, as ``(item position, record)``
cuts, from the local writer's planner (``recordforge.sharding``), and which shard(s)
each item's records go to.

>>> from recordforge._beam_plan import plan_by_items, plan_by_sizes
>>> plan = plan_by_items(5, 2)  # num_shards=2 over 5 items: items 0-1 and 2-4
>>> plan.starts, plan.assign(1), plan.assign(2)
(((0, 0), (2, 0)), [(0, 0, None)], [(1, 0, None)])
>>> from recordforge.sharding import WriteOptions
>>> sizes = [(0, [40, 40, 40]), (1, []), (2, [40])]
>>> plan = plan_by_sizes(sizes, WriteOptions(max_records=2))
>>> plan.starts, plan.expected, plan.assign(0)
(((0, 0), (0, 2)), (2, 2), [(0, 0, 2), (1, 2, None)])
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Iterable, Sequence

import numpy as np

from recordforge.sharding import WriteOptions, shard_bounds, shard_starts

__all__ = ["BeamPlan", "plan_by_items", "plan_by_sizes"]


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


def plan_by_items(total: int, num_shards: int) -> BeamPlan:
    """``num_shards`` contiguous ranges of a split's ``total`` items
    (:func:`~recordforge.sharding.shard_bounds`, as the local writer cuts them)."""
    ends = shard_bounds(total, num_shards)
    return BeamPlan(starts=tuple((b, 0) for b in [0, *ends[:-1]]))


def plan_by_sizes(
    measured: Iterable[tuple[int, Sequence[int] | np.ndarray]], options: WriteOptions
) -> BeamPlan:
    """Shards from every item's record frame sizes, by the local writer's rule
    (:func:`~recordforge.sharding.shard_starts`); ``measured``: ``(position, sizes)`` for
    positions 0..n-1, in any order."""
    ordered = sorted(measured, key=lambda m: m[0])
    if [m[0] for m in ordered] != list(range(len(ordered))):
        raise RuntimeError("item positions are not 0..n-1 once each")
    counts = np.array([len(m[1]) for m in ordered], dtype=np.int64)
    record_starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    sizes = (
        np.concatenate([np.asarray(m[1], dtype=np.int64) for m in ordered])
        if ordered
        else np.zeros(0, np.int64)
    )
    starts = shard_starts(sizes, options)
    total = int(record_starts[-1])
    # The item holding each first record (the last one starting there: not an empty one).
    items = np.searchsorted(record_starts, starts, side="right") - 1
    cuts = tuple(
        (0, 0) if s == 0 else (int(p), int(s - record_starts[p]))
        for p, s in zip(items.tolist(), starts.tolist(), strict=True)
    )
    expected = np.diff(np.append(starts, total))
    return BeamPlan(starts=cuts, expected=tuple(int(e) for e in expected))
