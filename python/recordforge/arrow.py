"""pyarrow arrays -> the columns ``encode_record_batch`` takes, without Python work per row.

A missing value (null) becomes a present but empty feature, as TFX writes it: a column
with nulls is encoded as variable-length rows (``(values, row_splits)``) whose null
rows are empty. Strings and binaries are handed over as their Arrow buffers.

>>> import pyarrow as pa, recordforge as rf
>>> from recordforge.arrow import arrow_columns, infer_spec
>>> table = pa.table({"n": [1, None, 3], "s": ["a", "bc", None]})
>>> schema = rf.Schema(
...     {f.name: infer_spec(f.name, f.type, table[f.name].null_count) for f in table.schema}
... )
>>> records = rf.encode_record_batch(arrow_columns(table, schema))
>>> [rf.decode_example(r) for r in records][1]
{'n': array([], dtype=int64), 's': [b'bc']}
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from recordforge.errors import SchemaError
from recordforge.schema import FeatureSpec, Schema, Text

__all__ = ["ColumnError", "arrow_columns", "infer_spec"]


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
