"""How a schema's features are asked of the Rust decoders (``wanted``: name, kind and
fixed width; ``row_features``: with the shape a row takes) and how the columns they
return are put together (``assemble``: arrays of fixed shapes, :class:`Ragged`
otherwise). One place for both directions, shared by batches, ``take`` and ``ds[i]``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from recordforge.errors import DecodeError
from recordforge.ragged import Ragged
from recordforge.schema import Schema

__all__ = [
    "RowsError",
    "Wanted",
    "assemble",
    "check_row_lengths",
    "row_features",
    "row_lengths_fit",
    "wanted",
]


class RowsError(DecodeError):
    """A record whose values do not fill whole rows of its ``(None, w)`` feature;
    ``record``: its place among the records assembled."""

    def __init__(self, message: str, record: int) -> None:
        super().__init__(message)
        self.record = record


#: ``(name, kind, width)``: width the number of values every record holds, else None.
Wanted = tuple[str, str, int | None]


def wanted(schema: Schema) -> list[Wanted]:
    """The columns to decode for ``schema``; a ragged ``(None, None)`` feature adds its
    ``<name>/row_lengths``."""
    out: list[Wanted] = []
    for name, spec in schema.items():
        fixed = spec.fixed
        width = math.prod(s for s in spec.shape if s is not None) if fixed else None
        out.append((name, spec.kind, width))
        if spec.ragged:
            out.append((f"{name}/row_lengths", "int64", None))
    return out


def row_features(
    schema: Schema, columns: Sequence[Wanted]
) -> list[tuple[str, str, int | None, tuple[int | None, ...] | None]]:
    """``columns`` with the shape of one row's value (``None``: a 1-D array), as the
    Rust row reader takes them."""
    features = []
    for name, kind, width in columns:
        spec = schema.get(name)
        shape: tuple[int | None, ...] | None = None
        if spec is not None and spec.fixed:
            shape = tuple(spec.shape)
        elif spec is not None and len(spec.shape) == 2 and spec.shape[1] is not None:
            shape = spec.shape
        features.append((name, kind, width, shape))
    return features


def assemble(
    schema: Schema,
    columns: Sequence[Wanted],
    n: int,
    decoded: Sequence[tuple[Any, np.ndarray]],
) -> dict[str, Any]:
    """Columns of ``n`` records from ``(values, row_splits)`` pairs in ``columns`` order."""
    out: dict[str, Any] = {}
    for (name, kind, _), (values, splits) in zip(columns, decoded, strict=True):
        spec = schema.get(name)
        if kind == "bytes" and isinstance(values, list):
            values = np.array(values, dtype=object) if values else np.empty(0, object)
        if spec is not None and spec.fixed:
            out[name] = values.reshape((n, *spec.shape))
        elif spec is not None and len(spec.shape) == 2 and spec.shape[1] is not None:
            width = spec.shape[1]
            bad = np.flatnonzero(splits % width)
            if len(bad):  # a reshape would move values from record to record
                j = int(bad[0]) - 1
                raise RowsError(
                    f"feature {name!r} has shape (None, {width}), but a record holds "
                    f"{int(splits[j + 1] - splits[j])} values: they do not fill rows of {width}",
                    j,
                )
            out[name] = Ragged(values.reshape(-1, width), splits // width)
        else:
            out[name] = Ragged(values, splits)
    for name, spec in schema.items():
        lengths = out.get(f"{name}/row_lengths")
        if spec.ragged and name in out and isinstance(lengths, Ragged):
            check_row_lengths(name, out[name].row_splits, lengths.values, lengths.row_splits)
    return out


def check_row_lengths(
    name: str, splits: np.ndarray, lengths: np.ndarray, length_splits: np.ndarray
) -> None:
    """The ragged ``(None, None)`` feature ``name``'s records (``splits`` of its values)
    against its ``<name>/row_lengths`` (``lengths``, their ``length_splits``): each
    record's row lengths are at least 0 and sum to its values, as TensorFlow's ragged
    parse requires. :class:`RowsError` naming the first record that disagrees. (Each
    length is checked to be at most its record's values first, so the sums cannot wrap.)"""
    lengths = np.asarray(lengths, dtype=np.int64)
    counts = np.diff(splits)
    owner = np.repeat(np.arange(len(counts)), np.diff(length_splits))
    wrong = (lengths < 0) | (lengths > counts[owner])
    bad = np.zeros(len(counts), bool)
    bad[owner[wrong]] = True
    sums = np.concatenate([[0], np.cumsum(np.where(wrong, 0, lengths))])
    bad |= sums[length_splits[1:]] - sums[length_splits[:-1]] != counts
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        shown = lengths[length_splits[j] : length_splits[j + 1]].tolist()
        raise RowsError(
            f"feature {name!r} has {int(counts[j])} values, but its row lengths {shown} "
            "do not split them (each at least 0, summing to them)",
            j,
        )


def row_lengths_fit(count: int, lengths: Any) -> bool:
    """Whether one record's row ``lengths`` split its ``count`` values (each at least 0,
    summing to them): :func:`check_row_lengths` for one record, in Python (``ds[i]``)."""
    total = 0
    for length in lengths.tolist():
        if not 0 <= length <= count:
            return False
        total += length
    return total == count
