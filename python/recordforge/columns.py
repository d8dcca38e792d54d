"""Columns -> records without Python work per row: the column planner, which decides
how a split's data reaches the encoder, and the pyarrow conversion it uses.

Columns (a dict of equal-length NumPy arrays or lists, a pyarrow Table, a pandas
DataFrame) with the default conversion go to Rust :data:`COLUMN_BATCH` rows at a time
(:func:`plan_split`); anything else goes item by item.

pyarrow arrays become the columns ``encode_record_batch`` takes (:func:`arrow_columns`).
A missing value (null) becomes a present but empty feature, as TFX writes it: a column
with nulls is encoded as variable-length rows (``(values, row_splits)``) whose null
rows are empty. Strings and binaries are handed over as their Arrow buffers.

>>> import pyarrow as pa, recordforge as rf
>>> from recordforge.columns import arrow_columns, infer_spec
>>> table = pa.table({"n": [1, None, 3], "s": ["a", "bc", None]})
>>> schema = rf.Schema(
...     {f.name: infer_spec(f.name, f.type, table[f.name].null_count) for f in table.schema}
... )
>>> records = rf.encode_record_batch(arrow_columns(table, schema))
>>> [rf.decode_example(r) for r in records][1]
{'n': array([], dtype=int64), 's': [b'bc']}
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import importlib
import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, overload

import numpy as np

from recordforge._buffers import batch_pool
from recordforge.errors import SchemaError
from recordforge.example import encode_record_batch
from recordforge.pipeline import Converted, ToRecords
from recordforge.schema import FeatureSpec, Schema, Text
from recordforge.sharding import WriteOptions, shard_bounds

__all__ = [
    "COLUMN_BATCH",
    "ColumnError",
    "SplitPlan",
    "arrow_columns",
    "batch_starts",
    "encode_batch",
    "infer_spec",
    "plan_split",
]

COLUMN_BATCH = 4096
# The bytes of columns one Rust call encodes, at most (a batch of big rows, JPEGs, is
# cut to fewer rows): the allocator then reuses each batch's buffers for the next, where
# 4096 rows of 150 KB would take 600 MB of fresh, page-faulted memory per call. The
# records do not depend on the batches.
BATCH_BYTES = 8 << 20


def batch_starts(row_bytes: np.ndarray) -> list[int]:
    """The rows at which batches of columns start, from each row's bytes: a batch holds
    at most :data:`COLUMN_BATCH` rows and :data:`BATCH_BYTES` bytes (a bigger row is
    a batch of its own).

    >>> batch_starts(np.full(10_000, 100))
    [0, 4096, 8192]
    >>> batch_starts(np.array([10, 5_000_000, 5_000_000, 10, 9_000_000]))
    [0, 2, 4]
    """
    n = len(row_bytes)
    ends = np.cumsum(row_bytes, dtype=np.int64)
    starts: list[int] = []
    start = 0
    while start < n:
        starts.append(start)
        before = int(ends[start - 1]) if start else 0
        stop = int(np.searchsorted(ends, before + BATCH_BYTES, side="right"))
        start = min(max(stop, start + 1), start + COLUMN_BATCH, n)
    return starts


def _row_bytes(columns: Mapping[str, Any], n: int) -> np.ndarray:
    """Each row's bytes in ``columns`` (int64s): fixed-width arrays by their item size,
    string and bytes columns by each value's length."""
    sizes = np.zeros(n, dtype=np.int64)
    for v in columns.values():
        if isinstance(v, np.ndarray) and v.dtype.kind != "O":
            sizes += v.itemsize * math.prod(v.shape[1:])
        else:
            sizes += np.fromiter(map(len, v), dtype=np.int64, count=n)
    return sizes


def _arrow_row_bytes(table: Any) -> np.ndarray:
    """Each row's bytes in an Arrow table (int64s): fixed-width columns by their width,
    binary and string columns by each value's length, others by their average."""
    pa = _pa()
    pc = importlib.import_module("pyarrow.compute")
    sizes = np.zeros(table.num_rows, dtype=np.int64)
    for column in table.columns:
        kind = column.type
        if (
            pa.types.is_binary(kind)
            or pa.types.is_string(kind)
            or pa.types.is_large_binary(kind)
            or pa.types.is_large_string(kind)
        ):
            lengths = pc.binary_length(column).fill_null(0)
            sizes += lengths.to_numpy(zero_copy_only=False).astype(np.int64)
        else:
            sizes += column.nbytes // max(1, table.num_rows)
    return sizes


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

    @overload
    def __getitem__(self, i: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, i: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, i: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(i, slice):  # rows, as a Sequence's slice (forked workers' chunks)
            return [self[j] for j in range(*i.indices(self.n))]
        if not -self.n <= i < self.n:
            raise IndexError(f"row {i} of {self.n}")
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
    call. Ranges start at the rows ``starts`` and at ``cuts`` (never straddle one)."""

    def __init__(
        self,
        n: int,
        starts: Sequence[int],
        cuts: Sequence[int],
        get: Callable[[int, int], dict[str, Any]],
    ) -> None:
        points = sorted({0, *starts, *(c for c in cuts if 0 < c < n), n})
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


def _column_batches(
    rows: _ColumnRows, starts: Sequence[int], cuts: Sequence[int]
) -> _ColumnBatches:
    columns = rows.columns
    return _ColumnBatches(
        rows.n, starts, cuts, lambda a, b: {k: v[a:b] for k, v in columns.items()}
    )


def _arrow_batches(
    table: Any, schema: Schema, starts: Sequence[int], cuts: Sequence[int]
) -> _ColumnBatches:
    return _ColumnBatches(
        table.num_rows, starts, cuts, lambda a, b: arrow_columns(table.slice(a, b - a), schema)
    )


def _arrow_schema(table: Any) -> Schema:
    return Schema(
        {f.name: infer_spec(f.name, f.type, table.column(f.name).null_count) for f in table.schema}
    )


def _is_arrow(data: Any) -> bool:
    return hasattr(data, "to_pydict") and hasattr(data, "num_rows") and hasattr(data, "slice")


def encode_batch(batch: dict[str, Any]) -> Converted:
    """A batch of columns -> its records (one Rust call), as one :class:`Converted`; made
    in the conversion's reused buffers (:func:`batch_pool`) where it has some."""
    records = encode_record_batch(batch, pool=batch_pool())
    return Converted(records, len(records))


@dataclasses.dataclass
class SplitPlan:
    """How one split's data is fed to the writer: its items, their count when known,
    the conversion that suits them and, with ``num_shards``, where shards end."""

    rows: Iterable[Any]
    total: int | None
    to_records: ToRecords | None = None  # None: the caller's
    bounds: list[int] | None = None  # item counts at which shards end (num_shards)
    schema: Schema | None = None  # known from column types


def plan_split(data: Any, plain: bool, options: WriteOptions) -> SplitPlan:
    """Columns (NumPy, pyarrow, pandas) with the default conversion go to Rust a batch
    at a time, with no Python work per row; anything else goes item by item."""
    order = None
    if _is_arrow(data) and plain:
        schema = _arrow_schema(data)
        if options.shuffle:
            order = np.random.default_rng(options.seed).permutation(data.num_rows)
            data = data.take(order)
        cuts = shard_bounds(data.num_rows, options.num_shards) if options.num_shards else []
        batches = _arrow_batches(data, schema, batch_starts(_arrow_row_bytes(data)), cuts)
        return SplitPlan(
            batches, len(batches), encode_batch, batches.item_bounds(cuts) or None, schema
        )
    rows = _rows_of(data)
    if options.shuffle:
        if isinstance(rows, _ColumnRows):
            rows = rows.reordered(np.random.default_rng(options.seed).permutation(len(rows)))
        else:
            rows = list(rows)
            rows = [rows[i] for i in np.random.default_rng(options.seed).permutation(len(rows))]
    if plain and isinstance(rows, _ColumnRows) and rows.batchable():
        cuts = shard_bounds(rows.n, options.num_shards) if options.num_shards else []
        batches = _column_batches(rows, batch_starts(_row_bytes(rows.columns, rows.n)), cuts)
        return SplitPlan(
            batches, len(batches), encode_batch, batches.item_bounds(cuts) or None, rows.schema()
        )
    known = rows.schema() if plain and isinstance(rows, _ColumnRows) else None
    total = len(rows) if isinstance(rows, Sequence) else None
    return SplitPlan(rows, total, schema=known)


class ColumnError(ValueError):
    """A column whose values do not fit its feature spec as a whole; the caller can
    look for the rows at fault one by one."""


def _pa() -> Any:
    import pyarrow  # type: ignore[import-untyped]

    return pyarrow


def infer_spec(
    name: str,
    arrow_type: Any,
    null_count: int,
    nullable_ints: Literal["int64", "float32"] = "int64",
) -> FeatureSpec:
    """The feature an Arrow column becomes: integers and booleans -> ``int64``, floats ->
    ``float32``, strings -> ``string``, binaries -> ``bytes``, lists -> ``(None,)`` of
    their element; a column with nulls has shape ``(None,)``."""
    types = _pa().types
    shape: tuple[int | None, ...] = (None,) if null_count else ()
    if types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    if (
        types.is_list(arrow_type)
        or types.is_large_list(arrow_type)
        or types.is_fixed_size_list(arrow_type)
    ):
        element = infer_spec(name, arrow_type.value_type, 0)
        if element.shape != ():
            raise SchemaError(
                f"column {name!r} is {arrow_type}: nested lists are not supported; pass schema="
            )
        return FeatureSpec(dtype=element.dtype, shape=(None,), meaning=element.meaning)
    if types.is_null(arrow_type):
        return FeatureSpec(dtype="float32", shape=(None,))
    if types.is_integer(arrow_type) or types.is_boolean(arrow_type):
        if null_count and nullable_ints == "float32":
            return FeatureSpec(dtype="float32", shape=shape)
        return FeatureSpec(dtype="int64", shape=shape)
    if types.is_floating(arrow_type):
        return FeatureSpec(dtype="float32", shape=shape)
    if types.is_string(arrow_type) or types.is_large_string(arrow_type):
        return FeatureSpec(dtype="string", shape=shape, meaning=Text())
    if types.is_binary(arrow_type) or types.is_large_binary(arrow_type):
        return FeatureSpec(dtype="bytes", shape=shape)
    raise SchemaError(
        f"column {name!r} has type {arrow_type}, which has no feature kind; "
        "pass schema= (int64, float32, bytes or string)"
    )


def _is_list(arrow_type: Any) -> bool:
    types = _pa().types
    return bool(
        types.is_list(arrow_type)
        or types.is_large_list(arrow_type)
        or types.is_fixed_size_list(arrow_type)
    )


def _values(array: Any, dtype: str) -> Any:
    """The non-null values of a flat ``array`` as an encoder column of ``dtype``: the
    same values the row-by-row conversion gives, or :class:`ColumnError`."""
    pa = _pa()
    types = pa.types
    if types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if array.null_count:
        array = array.drop_null()
    t = array.type
    text = types.is_string(t) or types.is_large_string(t)
    binary = text or types.is_binary(t) or types.is_large_binary(t)
    number = types.is_integer(t) or types.is_boolean(t) or types.is_floating(t)
    if dtype == "int64":
        if not (types.is_integer(t) or types.is_boolean(t) or text):
            raise ColumnError(f"{t} values are not int64")  # float rows: one by one
        if not (types.is_integer(t) and t.bit_width < 64) and not types.is_int64(t):
            array = array.cast(pa.int64())  # strings parse; uint64 past int64 raises
        return array.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    if dtype == "float32":
        if not (number or text):
            raise ColumnError(f"{t} values are not float32")
        # Through float64 as Python's float() does, then rounded once to float32.
        if not types.is_floating(t):
            array = array.cast(pa.float64())
        return array.to_numpy(zero_copy_only=False).astype(np.float32)
    if not binary:
        raise ColumnError(f"{t} values are not {dtype}")
    _, offsets_buffer, data_buffer = array.buffers()
    large = types.is_large_string(t) or types.is_large_binary(t)
    if offsets_buffer is None:  # an empty array may have no buffers
        return {"data": np.zeros(0, np.uint8), "offsets": np.zeros(1, np.int64)}
    offsets = np.frombuffer(offsets_buffer, dtype=np.int64 if large else np.int32)
    offsets = offsets[array.offset : array.offset + len(array) + 1].astype(np.int64)
    data = (
        np.frombuffer(data_buffer, dtype=np.uint8)
        if data_buffer is not None
        else np.zeros(0, np.uint8)
    )
    start = int(offsets[0]) if len(offsets) else 0
    end = int(offsets[-1]) if len(offsets) else 0
    return {"data": data[start:end], "offsets": offsets - start}


def _splits(lengths: np.ndarray) -> np.ndarray:
    splits = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=splits[1:])
    return splits


def _column(array: Any, spec: FeatureSpec) -> Any:
    pa = _pa()
    n = len(array)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks() if array.num_chunks != 1 else array.chunk(0)
    shape = spec.shape
    if pa.types.is_null(array.type):
        if shape and shape[0] in (None, 0):
            empty = np.zeros(0, np.float32 if spec.kind == "float32" else np.int64)
            values: Any = empty if spec.kind != "bytes" else []
            return (values, np.zeros(n + 1, np.int64))
        raise ColumnError("missing values")
    valid = (
        np.ones(n, bool)
        if array.null_count == 0
        else array.is_valid().to_numpy(zero_copy_only=False)
    )
    if _is_list(array.type):
        if shape == ():
            raise ColumnError("lists for a one-value feature")
        flat = array.flatten()
        if flat.null_count:
            raise ColumnError("a list holds a missing value")
        lengths = pa.compute.list_value_length(array).fill_null(0).to_numpy(zero_copy_only=False)
        lengths = lengths.astype(np.int64)
        if shape[0] is not None and (not valid.all() or (lengths != shape[0]).any()):
            raise ColumnError(f"lists that are not {shape[0]} long")
        return (_values(flat, spec.dtype), _splits(lengths))
    values = _values(array, spec.dtype)
    if shape == () or shape == (1,):
        if not valid.all():
            raise ColumnError("missing values")
        if shape == (1,) and isinstance(values, np.ndarray):
            return values.reshape(n, 1)
        return values
    if shape[0] is not None:
        raise ColumnError(f"one value per row for a feature of {shape[0]} values")
    if valid.all():
        return values  # one value in every row
    return (values, _splits(valid.astype(np.int64)))


def arrow_columns(table: Any, schema: Schema) -> dict[str, Any]:
    """The columns of a pyarrow Table or RecordBatch named by ``schema``, in its order,
    as ``encode_record_batch`` takes them. A column the table lacks is all missing.
    Raises :class:`ColumnError` (naming the column) when a column's values do not fit
    its spec; no row-level detail is computed here."""
    pa = _pa()
    names = set(table.schema.names)
    columns: dict[str, Any] = {}
    for name, spec in schema.items():
        if spec.ragged:
            raise ColumnError(f"column {name!r}: ragged (None, None) features need row input")
        array = table.column(name) if name in names else pa.nulls(table.num_rows)
        try:
            columns[name] = _column(array, spec)
        except ColumnError as e:
            raise ColumnError(f"column {name!r}: {e}") from None
        except (pa.ArrowException, OverflowError, ValueError) as e:
            raise ColumnError(f"column {name!r}: {e}") from None
    return columns
