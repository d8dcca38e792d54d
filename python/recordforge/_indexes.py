"""Random access of a :class:`~recordforge.Dataset` apart from its reading: the indexes
``take`` and ``ds[...]`` accept, the Rust row reader behind ``ds[i]``, and the record a
``take`` that fails to assemble is named by."""

from __future__ import annotations

import operator
import weakref
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from recordforge import _core
from recordforge._decoded import RowsError, row_features, row_lengths_fit
from recordforge.errors import DecodeError

if TYPE_CHECKING:
    from recordforge._reader import Dataset

__all__ = ["Rows", "named_record", "record_indexes", "row_reader"]

_INT64_MAX = np.iinfo(np.int64).max


def record_indexes(indices: Any) -> np.ndarray:
    """``indices`` as a 1-D int64 array of record indexes (negative from the end, checked
    against the length by the caller). What is not integers is refused: a boolean mask
    (``np.flatnonzero(mask)`` gives its indexes), floats, strings; an unsigned index past
    int64's range is out of range, not wrapped.

    >>> record_indexes([3, -1]).tolist(), record_indexes(np.array([], np.float64)).tolist()
    ([3, -1], [])
    >>> record_indexes(np.arange(3) > 0)
    Traceback (most recent call last):
    ...
    TypeError: a boolean mask is not a list of record indexes: pass np.flatnonzero(mask)
    """
    if isinstance(indices, (list, tuple)) and any(isinstance(v, bool) for v in indices):
        raise TypeError("True and False are not record indexes (NumPy would read 1 and 0)")
    array = np.asarray(indices)
    if array.ndim > 1:
        raise TypeError(f"record indexes are one list, not an array of shape {array.shape}")
    if array.size == 0:
        return np.zeros(0, np.int64)
    kind = array.dtype.kind
    if kind == "b":
        raise TypeError("a boolean mask is not a list of record indexes: pass np.flatnonzero(mask)")
    if kind == "O" or (kind == "f" and not isinstance(indices, np.ndarray)):
        # Python ints past int64 (NumPy makes them objects, or floats) or anything else:
        # each one as an index
        try:
            given = indices if not isinstance(indices, np.ndarray) else array.reshape(-1)
            values = [operator.index(v) for v in given]
        except TypeError as e:
            raise TypeError(f"record indexes must be integers: {e}") from None
        for v in values:
            if not -_INT64_MAX <= v <= _INT64_MAX:
                raise IndexError(f"record {v} is out of range")
        return np.array(values, np.int64)
    if kind not in "iu":
        raise TypeError(f"record indexes must be integers, not {array.dtype}")
    array = array.reshape(-1)
    if kind == "u" and array.dtype.itemsize == 8 and (array > _INT64_MAX).any():
        raise IndexError(f"record {int(array[array > _INT64_MAX][0])} is out of range")
    return array.astype(np.int64)


def named_record(
    error: RowsError, paths: list[str], at: np.ndarray, offsets: np.ndarray
) -> DecodeError:
    """``error`` of the record ``error.record`` of a ``take``, naming its file
    (``paths[at[j]]``) and its byte offset there."""
    j = error.record
    return DecodeError(f"{paths[int(at[j])]}: the record at byte {int(offsets[j])}: {error}")


class Rows(Protocol):
    """What ``ds[i]`` reads a record with (the Rust row reader, or it checked)."""

    def __getitem__(self, i: int | np.integer[Any], /) -> dict[str, Any]: ...


class _CheckedRows:
    """The row reader, each row's ragged ``(None, None)`` features checked against their
    row lengths (as ``batches`` and ``take`` check them)."""

    def __init__(self, rows: _core.RowReader, ragged: list[str]) -> None:
        self.rows, self.ragged = rows, ragged

    def __getitem__(self, i: int | np.integer[Any], /) -> dict[str, Any]:
        row = self.rows[i]
        for name in self.ragged:
            values, lengths = row[name], row[f"{name}/row_lengths"]
            if not row_lengths_fit(len(values), lengths):
                raise DecodeError(
                    f"record {i}: feature {name!r} has {len(values)} values, but its row "
                    f"lengths {lengths.tolist()} do not split them (each at least 0, summing "
                    "to them)"
                )
        return row


def row_reader(ds: Dataset) -> Rows:
    """The Rust reader behind ``ds[i]``; it opens each file (``ShardFiles``) the first
    time one of its records is read."""
    ds._shards.check_uncompressed()
    features = row_features(ds.schema, ds._wanted())
    mine = ds._my_files()
    counts = ds._file_counts(exact=True)
    shard = ds._order.shard
    every = shard if shard is not None and len(ds.files) < shard[1] else None

    # The reader keeps ``load``, and the dataset keeps the reader: ``load`` holds the
    # dataset weakly, so that dropping the dataset frees its maps at once (the Rust
    # reader is opaque to the cycle collector: a cycle through it is never freed).
    owner = weakref.ref(ds)

    def load(k: int) -> tuple[Any, np.ndarray]:
        held = owner()
        if held is None:
            raise ReferenceError("the dataset of this row reader was dropped")
        path = held.files[mine[k]]
        return held._shards.record_file(path), held._shards.offsets(path, mine)

    rows = _core.RowReader([counts[f] for f in mine], features, load, every=every)
    names = {name for name, *_ in features}
    ragged = [n for n, s in ds.schema.items() if s.ragged and f"{n}/row_lengths" in names]
    return _CheckedRows(rows, ragged) if ragged else rows
