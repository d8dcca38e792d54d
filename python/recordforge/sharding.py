"""How records are split into shard files, for every engine: the options
(:class:`WriteOptions`), shard names, and the one rule that says where a shard ends
(:class:`ShardFill`; :func:`shard_starts` applies it to a whole split at once).

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
from collections.abc import Sequence
from typing import Any, cast

import numpy as np

from recordforge.example import RecordBatch
from recordforge.records import COMPRESSION_SUFFIXES, Compression

__all__ = [
    "CHECKSUMS",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_TEMPLATE",
    "FIT_WINDOW",
    "FRAME_OVERHEAD",
    "ShardFill",
    "WriteOptions",
    "frame_sizes",
    "parse_size",
    "shard_bounds",
    "shard_starts",
]

DEFAULT_TEMPLATE = "{split}-{index:05d}-of-{count:05d}.tfrecord"
CHECKSUMS = ("crc32c", "sha256")
DEFAULT_MAX_BYTES = 256 * 10**6
# Bytes of framing around each record in a file: length, its CRC, the data's CRC.
FRAME_OVERHEAD = 16
# Records considered at once when placing a batch into shards.
FIT_WINDOW = 1 << 16
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
    number, unit = float(m.group(1)), m.group(2).lower()
    base = 1024 ** "kmgt".index(unit[0]) * 1024 if unit.endswith("ib") else _UNITS[unit[:1]]
    return int(number * base)


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


def shard_starts(sizes: np.ndarray, options: WriteOptions) -> np.ndarray:
    """The first record of each shard, for a split's records of frame ``sizes`` placed in
    order by :class:`ShardFill`'s rule (``max_records`` / ``max_bytes``); no records at
    all give one empty shard."""
    fill = ShardFill(options)
    starts = [0]
    k, window = 0, 64
    while k < len(sizes):
        if fill.full(int(sizes[k])):
            starts.append(k)
            fill.clear()
        n = fill.fitting(sizes[k : k + window])
        fill.add(sizes[k : k + n])
        # A window about as long as the shards are: each record is summed a few times.
        window = min(max(2 * n, 64), FIT_WINDOW)
        k += n
    return np.array(starts, dtype=np.int64)
