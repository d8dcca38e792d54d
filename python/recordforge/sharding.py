"""How records are split into shard files, for every engine: the options
(:class:`WriteOptions`), shard names, and the one rule that says where a shard ends
(:class:`ShardFill`), applied item by item as a conversion goes by :class:`ShardPlanner`
(the local writer, its worker processes and Beam all plan through it;
:func:`shard_starts` runs it over a whole split at once).

>>> from recordforge.sharding import (
...     WriteOptions, frame_sizes, parse_size, shard_bounds, shard_starts
... )
>>> options = WriteOptions(max_bytes=100)
>>> sizes = frame_sizes([b"x" * 24] * 7)  # 40 bytes each in a file
>>> shard_starts(sizes, options).tolist()
[0, 2, 4, 6]
>>> shard_bounds(10, 3), parse_size("1kB")
([3, 6, 10], 1000)
"""

from __future__ import annotations

import dataclasses
import re
import string
from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np

from recordforge.example import RecordBatch
from recordforge.records import COMPRESSION_SUFFIXES, Compression

__all__ = [
    "CHECKSUMS",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_TEMPLATE",
    "FEW_RECORDS",
    "FIT_WINDOW",
    "FRAME_OVERHEAD",
    "ShardFill",
    "ShardPlanner",
    "WriteOptions",
    "frame_sizes",
    "parse_size",
    "shard_bounds",
    "shard_starts",
    "split_counts",
]

DEFAULT_TEMPLATE = "{split}-{index:05d}-of-{count:05d}.tfrecord"
CHECKSUMS = ("crc32c", "sha256")
DEFAULT_MAX_BYTES = 256 * 10**6
# Bytes of framing around each record in a file: length, its CRC, the data's CRC.
FRAME_OVERHEAD = 16
# Records considered at once when placing a batch into shards.
FIT_WINDOW = 1 << 16
# Items of at most this many records are placed a record at a time, without NumPy.
FEW_RECORDS = 16
# Shard indexes a name template is tried with (they must give distinct names).
_NAME_PROBE = 1000
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def _plain_name(template: str, name: str) -> None:
    """A shard name must be a plain file name, not one of recordforge's own."""
    if (
        not name
        or any(c in name for c in "/\\\0")
        or name.startswith(".")
        or name == "dataset.json"
    ):
        raise ValueError(f"name_template {template!r} must give plain file names, not {name!r}")
    if name.endswith((".idx", ".partial", ".tmp")):
        raise ValueError(
            f"name_template {template!r} gives names ending in "
            f"{name.rsplit('.', 1)[1]!r}, which recordforge keeps for its own files"
        )


def parse_size(value: int | str) -> int:
    """``"256MB"`` -> 256_000_000, ``"1GiB"`` -> 1_073_741_824, ints pass through.

    >>> parse_size("256MB"), parse_size("1GiB"), parse_size(4096)
    (256000000, 1073741824, 4096)
    """
    if isinstance(value, int):
        return value
    m = _SIZE.match(value)
    if not m:
        raise ValueError(f"cannot read size {value!r}: expected e.g. 4096, '256MB' or '1GiB'")
    text, unit = m.group(1), m.group(2).lower()
    base = 1024 ** "kmgt".index(unit[0]) * 1024 if unit.endswith("ib") else _UNITS[unit[:1]]
    # (whole numbers exactly: a float holds 53 bits)
    return int(text) * base if text.isdigit() else int(float(text) * base)


@dataclasses.dataclass(frozen=True, kw_only=True)
class WriteOptions:
    """How records are split into shard files. At most one of ``max_records``,
    ``max_bytes`` and ``num_shards``; none means ``max_bytes="256MB"``. The name template
    may use ``{split}``, ``{index}``, ``{count}`` (shards in the split) and ``{records}``
    (records in that shard), e.g. the Keras example's ``file_{index:02d}-{records}.tfrec``.
    ``checksum`` is the shard checksum ``dataset.json`` keeps: ``"crc32c"`` (the CRC32C
    of the whole file, computed as it is written at no measurable cost, and in the same
    pass as the record CRCs by ``verify``) or ``"sha256"`` (~1 GB/s per core, for users
    who want a cryptographic digest)."""

    max_records: int | None = None
    max_bytes: int | str | None = None
    num_shards: int | None = None
    name_template: str = DEFAULT_TEMPLATE
    compression: str | None = None
    index: bool = False
    shuffle: bool = False
    seed: int = 0
    checksum: str = "crc32c"

    def __post_init__(self) -> None:
        given = [n for n in ("max_records", "max_bytes", "num_shards") if getattr(self, n)]
        if len(given) > 1:
            raise ValueError(f"give at most one of max_records, max_bytes, num_shards: {given}")
        if self.max_bytes is not None:
            object.__setattr__(self, "max_bytes", parse_size(self.max_bytes))
        for name in ("max_records", "max_bytes", "num_shards"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, not {value}")
        if self.compression not in COMPRESSION_SUFFIXES:
            raise ValueError(
                f"compression must be None, 'gzip' or 'zlib', not {self.compression!r}"
            )
        if self.checksum not in CHECKSUMS:
            raise ValueError(f"checksum must be 'crc32c' or 'sha256', not {self.checksum!r}")
        try:
            names = {self.shard_name("train", i, _NAME_PROBE, 1) for i in range(_NAME_PROBE)}
        except (KeyError, IndexError, ValueError, TypeError, OverflowError) as e:
            raise ValueError(f"bad name_template {self.name_template!r}: {e}") from None
        fields = {f for _, f, _, _ in string.Formatter().parse(self.name_template) if f}
        if "index" not in fields:
            raise ValueError(
                f"name_template {self.name_template!r} has no {{index}}: every shard would "
                "get the same name"
            )
        for name in names:
            _plain_name(self.name_template, name)
        if len(names) < _NAME_PROBE:
            raise ValueError(f"name_template {self.name_template!r} gives two shards the same name")

    def check_names(self, splits: Sequence[str]) -> None:
        """Refuses, before anything is written, split names that are not plain names and
        a template that gives shards of two splits one name."""
        for split in splits:
            if (
                not isinstance(split, str)
                or not split
                or split.startswith(".")
                or any(c in split for c in "/\\\0")
            ):
                raise ValueError(
                    f"split name {split!r}: must be a plain name (not empty, no '/', no "
                    "leading '.')"
                )
            _plain_name(self.name_template, self.shard_name(split, 0, 1, 1))
        fields = {f for _, f, _, _ in string.Formatter().parse(self.name_template) if f}
        if len(set(splits)) > 1 and "split" not in fields:
            raise ValueError(
                f"name_template {self.name_template!r} has no {{split}}: the shards of "
                f"splits {', '.join(map(repr, splits))} would get the same names"
            )

    def shard_name(self, split: str, index: int, count: int, records: int) -> str:
        name = self.name_template.format(split=split, index=index, count=count, records=records)
        if self.name_template == DEFAULT_TEMPLATE:
            # One of the table's keys: checked in __post_init__.
            name += COMPRESSION_SUFFIXES[cast(Compression, self.compression)]
        return name

    def fingerprint(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def frame_sizes(records: Sequence[bytes]) -> np.ndarray:
    """Bytes each record takes in a file: its size plus 16 bytes of framing."""
    if isinstance(records, RecordBatch):
        return records.sizes() + FRAME_OVERHEAD
    return np.fromiter(
        (len(r) + FRAME_OVERHEAD for r in records), dtype=np.int64, count=len(records)
    )


def shard_bounds(total: int, num_shards: int) -> list[int]:
    """Item counts at which shards end, for ``num_shards`` equal-as-possible shards."""
    return [(i + 1) * total // num_shards for i in range(num_shards)]


class ShardFill:
    """The shard being filled (its records and bytes so far) and the rule that ends it:
    a record opens a new shard when the open one has ``max_records`` records, or when it
    would take the open one past ``max_bytes`` (a shard holds at least one record). With
    ``num_shards`` shards end at item counts (:func:`shard_bounds`), never here."""

    def __init__(self, options: WriteOptions) -> None:
        self.options = options
        self.records = 0
        self.used = 0

    def clear(self) -> None:
        """A new, empty shard."""
        self.records, self.used = 0, 0

    def add(self, sizes: np.ndarray) -> None:
        """Records of frame ``sizes`` went into the shard."""
        self.records += len(sizes)
        self.used += int(sizes.sum())

    def full(self, next_frame: int) -> bool:
        """Whether the shard must be completed before a frame of ``next_frame`` bytes
        goes in."""
        if not self.records or self.options.num_shards:
            return False
        if self.options.max_records:
            return self.records >= self.options.max_records
        return self.used + next_frame > int(self.options.max_bytes or DEFAULT_MAX_BYTES)

    def fitting(self, sizes: np.ndarray) -> int:
        """How many records of frame ``sizes`` go into the shard, which ``full`` has just
        accepted the first for: the same boundaries as one check per record."""
        n = len(sizes)
        if self.options.num_shards:
            return n
        if self.options.max_records:
            return min(n, self.options.max_records - self.records)
        ends = np.cumsum(sizes) + self.used
        limit = int(self.options.max_bytes or DEFAULT_MAX_BYTES)
        return max(1, int(np.searchsorted(ends, limit, side="right")))


class ShardPlanner:
    """Where shards start, decided item by item in input order: the one planner of every
    engine (the local writer, its worker processes, Beam).

    ``add(position, frames, first)`` takes item ``position``'s records by their frame
    sizes (:func:`frame_sizes`; ``first``: records before it were written before a
    resume) and returns the shard starts that fall at or inside it, each one
    ``(position, record)``: the shard opened there begins with that record of that item,
    and the shard open before it is complete. ``finish()`` returns how many shards the
    split still completes at its end: the open one (when it holds records, or when no
    shard was completed at all) and, with ``num_shards``, the empty ones after it.

    The rule is :class:`ShardFill`'s (``max_records`` / ``max_bytes``); with
    ``num_shards``, shards end at item counts (``item_bounds``, from :func:`shard_bounds`
    over the items: a shard starts with the first item past its bound, even an item with
    no records) or, when the source knows how many records it gives, at record counts
    (``record_bounds``: a shard starts with the first record past its bound, and shards
    whose bounds are never reached are completed empty by ``finish``). A resumed
    conversion starts the planner where its journal ends: ``shards`` completed,
    ``records`` written in them.

    >>> planner = ShardPlanner(WriteOptions(max_records=3))
    >>> planner.add(0, frame_sizes([b"a", b"b"])), planner.add(1, frame_sizes([b"c"] * 5))
    ([], [(1, 1), (1, 4)])
    >>> planner.index, planner.records, planner.finish()
    (2, 1, 1)
    >>> planner = ShardPlanner(WriteOptions(num_shards=2), record_bounds=shard_bounds(4, 2))
    >>> planner.add(0, frame_sizes([b"a"])), planner.add(1, frame_sizes([b"b", b"c", b"d"]))
    ([], [(1, 1)])
    """

    def __init__(
        self,
        options: WriteOptions,
        *,
        item_bounds: Sequence[int] | None = None,
        record_bounds: Sequence[int] | None = None,
        shards: int = 0,
        records: int = 0,
    ) -> None:
        if options.num_shards and (item_bounds is None) == (record_bounds is None):
            raise ValueError("num_shards: give the shards' item_bounds or record_bounds")
        self.fill = ShardFill(options)
        self.item_bounds = list(item_bounds) if item_bounds is not None else None
        self.record_bounds = list(record_bounds) if record_bounds is not None else None
        self.index = shards  # the open shard
        self.total = records  # records placed, in every shard
        self._window = 64

    @property
    def records(self) -> int:
        """Records in the open shard."""
        return self.fill.records

    def _start(self, starts: list[tuple[int, int]], position: int, record: int) -> None:
        starts.append((position, record))
        self.fill.clear()
        self.index += 1

    def add(
        self, position: int, frames: np.ndarray | list[int], first: int = 0
    ) -> list[tuple[int, int]]:
        """Item ``position``'s records ``frames[first:]`` placed: the shards starting at
        or inside it (see the class docstring). ``frames``: an array, or a list of a few
        (:data:`FEW_RECORDS`)."""
        starts: list[tuple[int, int]] = []
        n = len(frames)
        few = self.record_bounds is None and n - first <= FEW_RECORDS
        # (A list of a few is read as it is, by the loop for a few below.)
        array: np.ndarray = (
            frames
            if isinstance(frames, np.ndarray)
            else np.asarray(frames[:0] if few else frames, np.int64)
        )
        bounds = self.item_bounds
        while (
            bounds is not None and self.index < len(bounds) - 1 and bounds[self.index] <= position
        ):
            self._start(starts, position, first)
        k = first
        bounds = self.record_bounds
        if bounds is not None:
            end = self.total + n - first
            while self.index < len(bounds) - 1 and bounds[self.index] < end:
                j = first + max(0, bounds[self.index] - self.total)
                self.fill.add(array[k:j])
                self._start(starts, position, j)
                k = j
            self.fill.add(array[k:])
        elif few:  # an item of a few records (an image): one check each
            fill = self.fill
            sizes = frames[first:]
            for size in sizes.tolist() if isinstance(sizes, np.ndarray) else sizes:
                if fill.full(size):
                    self._start(starts, position, k)
                fill.records, fill.used = fill.records + 1, fill.used + size
                k += 1
        else:
            while k < n:
                if self.fill.full(int(array[k])):
                    self._start(starts, position, k)
                m = self.fill.fitting(array[k : k + self._window])
                self.fill.add(array[k : k + m])
                # A window about as long as the shards are: each record is summed a
                # few times.
                self._window = min(max(2 * m, 64), FIT_WINDOW)
                k += m
        self.total += max(0, n - first)
        return starts

    def finish(self) -> int:
        """How many shards the split still completes at its end (see the class docstring)."""
        bounds = self.item_bounds if self.item_bounds is not None else self.record_bounds
        if bounds is not None:
            return max(0, len(bounds) - self.index)
        return 1 if self.fill.records or self.index == 0 else 0


def shard_starts(sizes: np.ndarray, options: WriteOptions) -> np.ndarray:
    """The first record of each shard, for a split's records of frame ``sizes`` placed in
    order by :class:`ShardFill`'s rule (``max_records`` / ``max_bytes``); no records at
    all give one empty shard."""
    starts = ShardPlanner(options).add(0, sizes)
    return np.array([0, *(record for _, record in starts)], dtype=np.int64)


def split_counts(
    num_records: int | Mapping[str, int] | None, names: Sequence[str]
) -> dict[str, int]:
    """``write_dataset``'s ``num_records`` as ``{split: records}``, checked."""
    if num_records is None:
        return {}
    if not isinstance(num_records, Mapping):
        if len(names) != 1:
            raise ValueError("num_records as a number counts one split: give {split: records}")
        return {names[0]: int(num_records)}
    unknown = sorted(set(num_records) - set(names))
    if unknown:
        raise ValueError(f"num_records names splits that are not written: {unknown}")
    return {name: int(n) for name, n in num_records.items()}
