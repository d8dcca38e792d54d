"""``write_dataset``: records -> sharded TFRecord files + ``dataset.json``.

Shards are written under a temporary name and renamed when complete; a journal
(``.recordforge-progress.json``) records each completed shard and how far into the
input it reached, so a rerun of an interrupted conversion skips the work already done
and ends with exactly the files an uninterrupted run writes. ``dataset.json`` is written
last, atomically; then the journal is removed.

>>> import tempfile, recordforge as rf
>>> rows = [{"id": i, "text": f"row {i}"} for i in range(10)]
>>> with tempfile.TemporaryDirectory() as d:
...     manifest = rf.write_dataset(rows, d, max_records=4)
...     files = [s.file for s in manifest.splits["train"]]
...     back = [rf.decode_example(r)["id"][0] for f in files for r in rf.read_records(f"{d}/{f}")]
>>> files
['train-00000-of-00003.tfrecord', 'train-00001-of-00003.tfrecord', 'train-00002-of-00003.tfrecord']
>>> back == list(range(10))
True
"""

from __future__ import annotations

import bisect
import concurrent.futures
import dataclasses
import functools
import itertools
import json
import multiprocessing
import os
import re
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from recordforge import _core
from recordforge._atomic import fsync as _fsync
from recordforge._atomic import stage, write_bytes_atomic
from recordforge._fs import is_url
from recordforge._outdir import Journal, OutputDir
from recordforge.errors import OnError, RecordforgeError, on_error_policy
from recordforge.example import RecordBatch, encode_example, encode_record_batch
from recordforge.manifest import Manifest, ShardInfo
from recordforge.records import TFRecordWriter
from recordforge.schema import FeatureSpec, Schema
from recordforge.sequence import infer_sequence_schema

__all__ = [
    "DEFAULT_TEMPLATE",
    "ConversionReport",
    "Converted",
    "ItemError",
    "WriteOptions",
    "write_dataset",
]

DEFAULT_TEMPLATE = "{split}-{index:05d}-of-{count:05d}.tfrecord"
CHECKSUMS = ("crc32c", "sha256")
SUFFIXES = {None: "", "gzip": ".gz", "zlib": ".zlib"}
DEFAULT_MAX_BYTES = 256 * 10**6
# Shard indexes a name template is tried with (they must give distinct names).
_NAME_PROBE = 1000
COLUMN_BATCH = 4096
# Records considered at once when placing a batch into shards.
_FIT_WINDOW = 1 << 16
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


class ItemError(RecordforgeError):
    """An input item that cannot be converted; ``item`` names it, ``reason`` says why.
    With ``on_error="skip"`` it is listed in the report; otherwise the conversion stops."""

    def __init__(self, item: str, reason: str) -> None:
        super().__init__(item, reason)
        self.item = item
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.item}: {self.reason}"


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
        if self.compression not in SUFFIXES:
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
            name += SUFFIXES[self.compression]
        return name

    def fingerprint(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class ConversionReport:
    """What a conversion did: items read, records written, every skipped item with its
    reason, named counts (``counters``, e.g. boxes clipped) and ``notes`` naming items
    that were converted but changed or flagged."""

    items: int = 0
    records: int = 0
    skipped: list[dict[str, str]] = dataclasses.field(default_factory=list)
    counters: dict[str, int] = dataclasses.field(default_factory=dict)
    notes: list[dict[str, str]] = dataclasses.field(default_factory=list)

    def skip(self, item: str, reason: str) -> None:
        self.skipped.append({"item": item, "reason": reason})

    def note(self, item: str, what: str) -> None:
        """Names an item that was converted but changed or flagged (a box clipped, ...)."""
        self.notes.append({"item": item, "reason": what})

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace_with(self, other: ConversionReport) -> None:
        """Takes ``other``'s contents (a resumed conversion's report, from its journal)."""
        for field in dataclasses.fields(self):
            setattr(self, field.name, getattr(other, field.name))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ConversionReport:
        return cls(
            items=data.get("items", 0),
            records=data.get("records", 0),
            skipped=list(data.get("skipped", [])),
            counters=dict(data.get("counters", {})),
            notes=list(data.get("notes", [])),
        )


@dataclasses.dataclass
class Converted:
    """What ``to_records`` returns for an item that stands for several input items (a
    batch of table rows): their records, how many input items they were, and an
    :class:`ItemError` for each one rejected (raised with ``on_error="raise"``, listed
    in the report with ``"skip"``)."""

    records: Sequence[bytes]
    items: int = 1
    errors: list[ItemError] = dataclasses.field(default_factory=list)

    def __reduce__(self) -> tuple[Any, ...]:
        # A RecordBatch stays in Rust; across processes its records travel as bytes.
        return (Converted, (list(self.records), self.items, self.errors))


# An item becomes zero or more records (or a Converted); ItemError rejects it.
ToRecords = Callable[[Any], Sequence[bytes] | Converted]
# Called after each item with the records and payload bytes it produced.
Progress = Callable[[int, int], None]


def _default_to_records(item: Any) -> Sequence[bytes]:
    if isinstance(item, bytes):
        return (item,)
    return (encode_example(item),)


def _is_columns(data: Any) -> bool:
    return isinstance(data, Mapping) and all(
        hasattr(v, "__len__") and not isinstance(v, (str, bytes)) for v in data.values()
    )


def _rows_of(data: Any) -> Sequence[Any] | Iterable[Any]:
    """Rows from columns (dict of arrays, pyarrow Table, pandas DataFrame) or as given."""
    if hasattr(data, "to_pydict") and hasattr(data, "num_rows"):  # pyarrow.Table
        data = data.to_pydict()
    elif hasattr(data, "to_dict") and hasattr(data, "columns"):  # pandas.DataFrame
        data = {c: data[c].to_numpy() for c in data.columns}
    if _is_columns(data):
        columns = {k: v if isinstance(v, np.ndarray) else list(v) for k, v in data.items()}
        lengths = {len(v) for v in columns.values()}
        if len(lengths) > 1:
            raise ValueError(
                f"columns have different lengths: { {k: len(v) for k, v in columns.items()} }"
            )
        n = lengths.pop() if lengths else 0
        return _ColumnRows(columns, n)
    return data  # type: ignore[no-any-return]


class _ColumnRows(Sequence[dict[str, Any]]):
    """Rows of equal-length columns, without copying them."""

    def __init__(self, columns: dict[str, Any], n: int) -> None:
        self.columns, self.n = columns, n
        self._types: dict[str, set[type]] = {}

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Any]:  # type: ignore[override]
        return {k: v[i] for k, v in self.columns.items()}

    def reordered(self, order: np.ndarray) -> _ColumnRows:
        return _ColumnRows(
            {
                k: v[order] if isinstance(v, np.ndarray) else [v[i] for i in order]
                for k, v in self.columns.items()
            },
            self.n,
        )

    def batchable(self) -> bool:
        """Whether ``encode_columns`` takes every column as it is: numbers or strings."""
        return all(
            v.dtype.kind in "biufSU"
            if isinstance(v, np.ndarray) and v.dtype.kind != "O"
            else self.value_types(k) in ({str}, {bytes}, {str, bytes})
            for k, v in self.columns.items()
        )

    def value_types(self, name: str) -> set[type]:
        """The types of a list or object column's values, computed once per column."""
        if name not in self._types:
            self._types[name] = _value_types(self.columns[name])
        return self._types[name]

    def schema(self) -> Schema | None:
        """The schema these columns encode to, from their types alone (None when a
        column's type can only be told from its values' records)."""
        features = {}
        for name, column in self.columns.items():
            spec = _column_spec(column, functools.partial(self.value_types, name))
            if spec is None:
                return None
            features[name] = spec
        return Schema(features)


def _value_types(column: Sequence[Any]) -> set[type]:
    """The types of a list or object array's values (one pass at C speed)."""
    return set(map(type, column))


def _column_spec(column: Any, value_types: Callable[[], set[type]]) -> FeatureSpec | None:
    """Dtype and shape of a column: a NumPy array or a list of str/bytes."""
    if isinstance(column, np.ndarray):
        kind = column.dtype.kind
        if kind in "biu":
            return FeatureSpec(dtype="int64", shape=column.shape[1:])
        if kind == "f":
            return FeatureSpec(dtype="float32", shape=column.shape[1:])
        if kind in "SU":
            return FeatureSpec(dtype="bytes" if kind == "S" else "string", shape=column.shape[1:])
        if kind != "O" or column.ndim != 1:
            return None
    types = value_types()
    if types == {str}:
        return FeatureSpec(dtype="string")
    if types == {bytes}:
        return FeatureSpec(dtype="bytes")
    return None


class _ColumnBatches(Sequence[dict[str, Any]]):
    """Consecutive row ranges of columns: each item becomes many records in one Rust
    call. Ranges hold at most ``size`` rows and never straddle a row in ``cuts``."""

    def __init__(
        self, n: int, size: int, cuts: Sequence[int], get: Callable[[int, int], dict[str, Any]]
    ) -> None:
        points = sorted({*range(0, n, size), *(c for c in cuts if 0 < c < n), n})
        self.ranges = list(itertools.pairwise(points)) if n else []
        self.get = get

    def __len__(self) -> int:
        return len(self.ranges)

    def __getitem__(self, i: int) -> dict[str, Any]:  # type: ignore[override]
        start, stop = self.ranges[i]
        return self.get(start, stop)

    def item_bounds(self, row_bounds: Sequence[int]) -> list[int]:
        """Item counts at which shards end, for shards ending at ``row_bounds`` rows."""
        stops = [stop for _, stop in self.ranges]
        return [bisect.bisect_right(stops, b) for b in row_bounds]


def _column_batches(rows: _ColumnRows, size: int, cuts: Sequence[int]) -> _ColumnBatches:
    columns = rows.columns
    return _ColumnBatches(rows.n, size, cuts, lambda a, b: {k: v[a:b] for k, v in columns.items()})


def _arrow_batches(table: Any, schema: Schema, size: int, cuts: Sequence[int]) -> _ColumnBatches:
    from recordforge.arrow import arrow_columns

    return _ColumnBatches(
        table.num_rows, size, cuts, lambda a, b: arrow_columns(table.slice(a, b - a), schema)
    )


def _arrow_schema(table: Any) -> Schema:
    from recordforge.arrow import infer_spec

    return Schema(
        {f.name: infer_spec(f.name, f.type, table.column(f.name).null_count) for f in table.schema}
    )


def _is_arrow(data: Any) -> bool:
    return hasattr(data, "to_pydict") and hasattr(data, "num_rows") and hasattr(data, "slice")


def _encode_batch(batch: dict[str, Any]) -> Converted:
    records = encode_record_batch(batch)
    return Converted(records, len(records))


@dataclasses.dataclass
class _SplitPlan:
    """How one split's data is fed to ``_write_split``."""

    rows: Iterable[Any]
    total: int | None
    to_records: ToRecords | None = None  # None: the caller's
    bounds: list[int] | None = None  # item counts at which shards end (num_shards)
    schema: Schema | None = None  # known from column types


def _plan_split(data: Any, plain: bool, options: WriteOptions) -> _SplitPlan:
    """Columns (NumPy, pyarrow, pandas) with the default conversion go to Rust a batch
    at a time, with no Python work per row; anything else goes item by item."""
    order = None
    if _is_arrow(data) and plain:
        schema = _arrow_schema(data)
        if options.shuffle:
            order = np.random.default_rng(options.seed).permutation(data.num_rows)
            data = data.take(order)
        cuts = _shard_bounds(data.num_rows, options.num_shards) if options.num_shards else []
        batches = _arrow_batches(data, schema, COLUMN_BATCH, cuts)
        return _SplitPlan(
            batches, len(batches), _encode_batch, batches.item_bounds(cuts) or None, schema
        )
    rows = _rows_of(data)
    if options.shuffle:
        if isinstance(rows, _ColumnRows):
            rows = rows.reordered(np.random.default_rng(options.seed).permutation(len(rows)))
        else:
            rows = list(rows)
            rows = [rows[i] for i in np.random.default_rng(options.seed).permutation(len(rows))]
    if plain and isinstance(rows, _ColumnRows) and rows.batchable():
        cuts = _shard_bounds(rows.n, options.num_shards) if options.num_shards else []
        batches = _column_batches(rows, COLUMN_BATCH, cuts)
        return _SplitPlan(
            batches, len(batches), _encode_batch, batches.item_bounds(cuts) or None, rows.schema()
        )
    known = rows.schema() if plain and isinstance(rows, _ColumnRows) else None
    total = len(rows) if isinstance(rows, Sequence) else None
    return _SplitPlan(rows, total, schema=known)


def _frame_sizes(records: Sequence[bytes]) -> np.ndarray:
    """Bytes each record takes in a file: its size plus 16 bytes of framing."""
    if isinstance(records, RecordBatch):
        return records.sizes() + 16
    return np.fromiter((len(r) + 16 for r in records), dtype=np.int64, count=len(records))


def _shard_bounds(total: int, num_shards: int) -> list[int]:
    """Item counts at which shards end, for ``num_shards`` equal-as-possible shards."""
    return [(i + 1) * total // num_shards for i in range(num_shards)]


@dataclasses.dataclass
class _Shard:
    """A completed shard, under its intermediate name until the conversion finishes."""

    tmp: str
    records: int
    bytes: int
    checksum: str

    def final(self, options: WriteOptions, split: str, index: int, count: int) -> str:
        return options.shard_name(split, index, count, self.records)


class _ShardWriter:
    """Writes one split's records into shards, completing each atomically."""

    def __init__(
        self,
        out: Path,
        split: str,
        options: WriteOptions,
        journal: Journal,
        report: ConversionReport,
    ) -> None:
        self.out, self.split, self.options, self.journal = out, split, options, journal
        self.report = report
        self.state = journal.split(split)
        self.writer: TFRecordWriter | None = None
        self.records = 0
        # Per record of the open shard, in chunks: frame offsets and frame sizes.
        self.offsets: list[np.ndarray] = []
        self.sizes: list[np.ndarray] = []
        self.used = 0
        self.io = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="recordforge-io")
        self.pending: concurrent.futures.Future[np.ndarray] | None = None

    def wait(self) -> None:
        """Waits for the write in flight, if any (raising its error)."""
        if self.pending is not None:
            # Cleared only once the write is over: an interrupt while waiting must leave
            # it for abandon() to wait for.
            offsets = self.pending.result()
            self.pending = None
            self.offsets.append(offsets)

    def shutdown(self) -> None:
        self.io.shutdown(wait=True)

    @property
    def index(self) -> int:
        return len(self.state["shards"])

    def _tmp_name(self) -> str:
        return f".{self.split}-{self.index:05d}.shard"

    def open_if_needed(self) -> TFRecordWriter:
        if self.writer is None:
            self.writer = TFRecordWriter(
                self.out / f"{self._tmp_name()}.partial",
                self.options.compression,
                checksum=self.options.checksum,
            )
            self.records, self.offsets, self.sizes, self.used = 0, [], [], 0
        return self.writer

    def write_many(self, records: Sequence[bytes], sizes: np.ndarray, start: int, n: int) -> None:
        """Writes ``records[start:start + n]``, whose frame sizes are ``sizes``, on the
        I/O thread while the caller encodes the next ones (one write in flight at a time,
        so memory stays within two batches)."""
        writer = self.open_if_needed()
        self.wait()
        if isinstance(records, RecordBatch):
            self.pending = self.io.submit(writer.write_batch, records, start, start + n)
        else:
            chunk = records[start : start + n]
            self.pending = self.io.submit(
                lambda: np.asarray(writer.write_many(chunk), dtype=np.uint64)
            )
        self.sizes.append(sizes)
        self.used += int(sizes.sum())
        self.records += n

    def fitting(self, sizes: np.ndarray) -> int:
        """How many records of frame ``sizes`` go into the open shard, which ``full`` has
        just accepted the first for: the same boundaries as one check per record."""
        n = len(sizes)
        if self.options.num_shards:
            return n
        if self.options.max_records:
            return min(n, self.options.max_records - self.records)
        ends = np.cumsum(sizes) + self.used
        limit = int(self.options.max_bytes or DEFAULT_MAX_BYTES)
        return max(1, int(np.searchsorted(ends, limit, side="right")))

    def full(self, next_frame: int) -> bool:
        """Whether the open shard must be completed before a frame of ``next_frame``
        bytes goes in."""
        if not self.records or self.options.num_shards:
            return False
        if self.options.max_records:
            return self.records >= self.options.max_records
        return self.used + next_frame > int(self.options.max_bytes or DEFAULT_MAX_BYTES)

    def complete(self, position: tuple[int, int]) -> None:
        """Closes the current shard (an empty one if none is open), writes its index,
        renames it to its intermediate name and only then records it, with the input
        position reached and the report so far, in the journal."""
        writer = self.open_if_needed()
        self.wait()
        writer.close()
        stage("shard closed")
        name = self._tmp_name()
        partial = self.out / f"{name}.partial"
        if self.options.index:
            offsets = np.concatenate(self.offsets) if self.offsets else np.zeros(0, np.uint64)
            sizes = np.concatenate(self.sizes) if self.sizes else np.zeros(0, np.int64)
            lines = "".join(
                f"{o} {s}\n" for o, s in zip(offsets.tolist(), sizes.tolist(), strict=True)
            )
            # By rename, which replaces whatever is there (a link is not followed).
            write_bytes_atomic(self.out / f"{name}.idx", lines.encode("ascii"))
            stage("shard index written")
        _fsync(partial)
        shard = _Shard(
            tmp=name,
            records=self.records,
            bytes=partial.stat().st_size,
            checksum=writer.checksum or "",
        )
        os.replace(partial, self.out / name)
        stage("shard renamed to its intermediate name")
        self.journal.record(
            self.split,
            self.report.to_json(),
            shard=dataclasses.asdict(shard),
            position=list(position),
        )
        self.writer = None
        self.records, self.offsets, self.sizes, self.used = 0, [], [], 0

    def abandon(self) -> None:
        # Every write in flight ends before the writer is closed under it.
        self.io.shutdown(wait=True)
        self.pending = None
        if self.writer is not None:
            self.writer.close()
            (self.out / f"{self._tmp_name()}.partial").unlink(missing_ok=True)
            self.writer = None
            self.records, self.offsets, self.sizes, self.used = 0, [], [], 0


# In a worker process: the conversion, sent once when the worker starts (not with every
# task: a source's bound method can carry a whole annotation index).
_worker_to_records: list[ToRecords] = []


def _init_worker(to_records: ToRecords) -> None:
    _worker_to_records[:] = [to_records]


def _attempt_in_worker(item: Any) -> Sequence[bytes] | Converted | ItemError:
    return _attempt(_worker_to_records[0], item)


def _attempt(to_records: ToRecords, item: Any) -> Sequence[bytes] | Converted | ItemError:
    """Runs ``to_records``, returning (not raising) an ItemError so it crosses processes."""
    try:
        return to_records(item)
    except ItemError as e:
        return e


def _write_split(
    rows: Iterable[Any],
    total: int | None,
    shards: _ShardWriter,
    to_records: ToRecords,
    on_error: OnError,
    report: ConversionReport,
    progress: Progress | None,
    pool: Any = None,
    bounds: list[int] | None = None,
) -> None:
    options = shards.options
    start_item, start_record = shards.state["position"]
    if options.num_shards and bounds is None:
        assert total is not None  # checked by write_dataset before anything is written
        bounds = _shard_bounds(total, options.num_shards)
    consumed = start_item
    try:
        attempt = functools.partial(_attempt, to_records)
        remaining = itertools.islice(rows, start_item, None)
        # In order either way: the output does not depend on the number of workers.
        results = (
            pool.imap(_attempt_in_worker, remaining, chunksize=4)
            if pool
            else map(attempt, remaining)
        )
        for position, records_or_error in enumerate(results, start_item):
            while bounds and shards.index < len(bounds) - 1 and bounds[shards.index] <= position:
                shards.complete((position, 0))
            records: Sequence[bytes] = ()
            items = 1
            first = start_record if position == start_item else 0
            errors: Sequence[ItemError] = ()
            if isinstance(records_or_error, ItemError):
                errors = (records_or_error,)
            elif isinstance(records_or_error, Converted):
                records, items = records_or_error.records, records_or_error.items
                errors = records_or_error.errors if first == 0 else ()
            else:
                records = records_or_error
            frames = _frame_sizes(records)
            k = first
            if k < len(records) and shards.full(int(frames[k])):
                # Before this item's errors are reported: the journal saved with the shard
                # holds the report of the items before it only.
                shards.complete((position, k))
            for error in errors:
                if on_error == "raise":
                    raise error
                report.skip(error.item, error.reason)
            while k < len(records):
                if shards.full(int(frames[k])):
                    shards.complete((position, k))
                n = shards.fitting(frames[k : k + _FIT_WINDOW])
                shards.write_many(records, frames[k : k + n], k, n)
                k += n
            consumed = position + 1
            report.items += items
            if progress is not None:
                n = len(records) - first
                progress(n, int(frames[first:].sum()) - 16 * n)
        if bounds:
            while shards.index < len(bounds):
                shards.complete((consumed, 0))
        elif shards.writer is not None or shards.index == 0:
            shards.complete((consumed, 0))
        shards.journal.record(shards.split, report.to_json(), done=True)
    except BaseException:
        shards.abandon()
        raise
    finally:
        shards.shutdown()


def _final_names(options: WriteOptions, journal: Journal) -> dict[str, list[tuple[_Shard, str]]]:
    """Each split's completed shards with their final names, checked to be distinct
    (and distinct from ``dataset.json`` and the working files) before any is renamed."""
    named = {
        split: [
            (shard, shard.final(options, split, i, len(state["shards"])))
            for i, shard in enumerate(_Shard(**d) for d in state["shards"])
        ]
        for split, state in journal.splits.items()
    }
    seen: dict[str, str] = {}
    for split, shards in named.items():
        for i, (_, final) in enumerate(shards):
            where = f"shard {i} of split {split!r}"
            if final in seen:
                raise ValueError(
                    f"name_template {options.name_template!r} gives {where} the name "
                    f"{final!r} of {seen[final]}: use {{index}} (and {{split}} with several "
                    "splits) in the template"
                )
            seen[final] = where
    return named


def _finalize(
    out: Path, options: WriteOptions, journal: Journal
) -> dict[str, tuple[ShardInfo, ...]]:
    """Renames completed shards (and indexes) to their final names. Safe to rerun after a
    crash half-way: a shard already under its final name is taken as renamed."""
    splits: dict[str, tuple[ShardInfo, ...]] = {}
    for split, shards in _final_names(options, journal).items():
        infos = []
        for shard, final in shards:
            for suffix in ("", ".idx") if options.index else ("",):
                tmp, dst = out / f"{shard.tmp}{suffix}", out / f"{final}{suffix}"
                if tmp.exists():
                    os.replace(tmp, dst)
                    stage("renamed to a final name")
                elif not dst.exists():
                    raise FileNotFoundError(
                        f"{out}: shard {tmp.name} of split {split!r} is missing"
                    )
            infos.append(
                ShardInfo(
                    file=final, records=shard.records, bytes=shard.bytes, checksum=shard.checksum
                )
            )
        splits[split] = tuple(infos)
    return splits


def _schema_of(
    column_schemas: Sequence[Schema | None],
    out: Path,
    splits: Mapping[str, Sequence[ShardInfo]],
) -> Schema:
    """The schema of columns when every split was given as columns of one schema
    (no pass over the written files); otherwise inferred from the records written."""
    first = column_schemas[0] if column_schemas else None
    if first is not None and all(s == first for s in column_schemas):
        return first
    return _infer_from_files(out, splits)


def _infer_from_files(out: Path, splits: Mapping[str, Sequence[ShardInfo]]) -> Schema:
    """The schema of the records written: Examples' features, or SequenceExamples'
    context features and feature lists."""
    return infer_sequence_schema(
        record
        for shards in splits.values()
        for shard in shards
        for record in _core.read_records(out / shard.file, "auto", True)
    )


def _local_paths(value: Any) -> Iterable[str]:
    """The strings of a source description that name existing local files or folders."""
    if isinstance(value, str):
        if value and not is_url(value) and "\0" not in value and os.path.exists(value):
            yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _local_paths(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _local_paths(v)


def _resolved(value: Any) -> Any:
    """A source description with its local paths made absolute (links resolved), so a
    rerun that spells a path differently is the same conversion."""
    if isinstance(value, str):
        return os.path.realpath(value) if any(_local_paths(value)) else value
    if isinstance(value, Mapping):
        return {k: _resolved(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolved(v) for v in value]
    return value


def _input_identity(source: Mapping[str, Any]) -> dict[str, list[int]]:
    """Size and modification time of every local input a source names: a rerun over
    changed input starts over instead of resuming with a mix of old and new records."""
    identity = {}
    for path in sorted(set(_local_paths(source))):
        info = os.stat(path)
        identity[os.path.realpath(path)] = [info.st_size, info.st_mtime_ns]
    return identity


def write_source(
    source: Any, out: str | os.PathLike[str], *, items: Any = None, **options: Any
) -> Manifest:
    """``write_dataset`` of a source (COCO, image folder, table): its items (or
    ``items``, already taken from it), converted by its ``to_records``, with its schema,
    description and report (what ``recordforge convert`` writes); ``options`` are
    ``write_dataset``'s."""
    report = source.report() if hasattr(source, "report") else None
    return write_dataset(
        source.items() if items is None else items,
        out,
        to_records=source.to_records,
        schema=source.schema(),
        source=source.describe(),
        report=report,
        **options,
    )


def write_dataset(
    data: Any = None,
    out: str | os.PathLike[str] = ".",
    *,
    split: str = "train",
    splits: Mapping[str, Any] | None = None,
    schema: Schema | None = None,
    to_records: ToRecords | None = None,
    on_error: OnError | Literal["fail"] = "raise",
    overwrite: bool = False,
    source: Mapping[str, Any] | None = None,
    report: ConversionReport | None = None,
    options: WriteOptions | None = None,
    progress: Progress | None = None,
    workers: int = 1,
    **option_kwargs: Any,
) -> Manifest:
    """Writes a dataset directory: sharded TFRecord files and ``dataset.json``.

    ``data`` is an iterable of feature dicts (or of serialized records), or columns: a
    dict of equal-length arrays, a pyarrow Table or a pandas DataFrame. ``splits`` maps
    split names to such data instead. ``to_records`` turns one input item into its
    records (raising :class:`ItemError` for a bad item: ``on_error="raise"`` stops,
    ``"skip"`` lists it in the report). Sharding options are those of
    :class:`WriteOptions`, given as keywords or as ``options``.

    A rerun into the directory of an interrupted run resumes from its completed shards;
    ``overwrite=True`` starts over. A non-empty directory that is not a recordforge
    dataset is refused. ``progress(records, payload_bytes)`` is called after each item.
    ``workers`` > 1 runs ``to_records`` in that many processes (it must be picklable);
    records, their order and their shards are the same for any number of workers.
    ``out`` may be an fsspec URL (``gs://...``, ``s3://...``): the dataset is written to
    a local temporary directory, then each file is uploaded under a temporary key and
    moved to its final one, ``dataset.json`` last (no resume for remote outputs).
    """
    on_error = on_error_policy(on_error)
    options = options or WriteOptions(**option_kwargs)
    if is_url(out):
        # gs://, s3://, ...: written locally, then each file committed to the object store.
        from recordforge._remote import write_to_url

        local = functools.partial(
            write_dataset,
            data,
            split=split,
            splits=splits,
            schema=schema,
            to_records=to_records,
            on_error=on_error,
            source=source,
            report=report,
            options=options,
            progress=progress,
            workers=workers,
        )
        return write_to_url(str(out), overwrite, local)
    if splits is None:
        splits = {split: data}
    options.check_names(list(splits))
    out = Path(out)
    fingerprint = {
        "options": options.fingerprint(),
        "splits": list(splits),
        "source": _resolved(json.loads(json.dumps(source or {}, default=str))),
        "inputs": _input_identity(source or {}),
    }
    report = report if report is not None else ConversionReport()
    custom, to_records = to_records, to_records or _default_to_records
    # Planned (and checked) before the directory is touched.
    plans = {name: _plan_split(data, custom is None, options) for name, data in splits.items()}
    for name, plan in plans.items():
        if options.num_shards and plan.bounds is None and plan.total is None:
            raise ValueError(
                f"split {name!r}: --num-shards (num_shards) needs an input whose length is "
                "known; use --max-records or --max-bytes"
            )
    column_schemas = [plan.schema for plan in plans.values()]
    with OutputDir.open(out, fingerprint, overwrite, report.to_json()) as target:
        if target.complete:
            return Manifest.load(out)
        journal = target.journal
        # A resumed conversion continues the report of the work before the kill.
        report.replace_with(ConversionReport.from_json(journal.report or {}))
        for name, plan in plans.items():
            if journal.split(name)["done"]:
                continue
            split_to_records = plan.to_records or to_records
            shards = _ShardWriter(out, name, options, journal, report)
            args = (plan.rows, plan.total, shards, split_to_records, on_error, report, progress)
            if workers > 1 and split_to_records is not _encode_batch:
                # (Column batches are encoded on threads in Rust already.)
                with multiprocessing.get_context("spawn").Pool(
                    workers, initializer=_init_worker, initargs=(split_to_records,)
                ) as pool:
                    _write_split(*args, pool=pool, bounds=plan.bounds)
            else:
                _write_split(*args, bounds=plan.bounds)
        final = _finalize(out, options, journal)
        report.records = sum(s.records for shards in final.values() for s in shards)
        manifest = Manifest(
            schema=schema if schema is not None else _schema_of(column_schemas, out, final),
            splits=final,
            compression=options.compression,
            index=options.index,
            source=dict(source or {}),
            report=report.to_json(),
            tool_version=_core.__version__,
        )
        manifest.save(out)
        stage("dataset.json written")
        target.done()
    return manifest
