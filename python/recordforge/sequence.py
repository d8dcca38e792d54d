"""Feature lists of ``tf.train.SequenceExample`` records, read as ragged steps.

A SequenceExample holds context features (read like an Example's) and feature lists:
per record, a list of steps, each step a ``tf.train.Feature`` of any number of values.
In :meth:`Dataset.batches <recordforge.Dataset.batches>` a feature list is a
:class:`RaggedSteps`: two ragged levels, steps per record and values per step (the
``tf.RaggedTensor`` ``[batch, (steps), (values)]`` that ``tf.io.parse_sequence_example``
gives for a ``RaggedFeature``); ``batch[name][i]`` and ``ds[i][name]`` are record
``i``'s steps: an array ``(steps, *shape)`` when the schema gives the steps a fixed
shape, else a list of one 1-D array per step.

>>> import tempfile, numpy as np, recordforge as rf
>>> d = tempfile.mkdtemp()
>>> records = [rf.encode_sequence_example({"id": i}, {"tokens": [[1, 2], [3]][: i + 1]})
...            for i in range(2)]
>>> _ = rf.write_dataset(records, d)
>>> ds = rf.open_dataset(d)
>>> dict(ds.schema.feature_lists)
{'tokens': FeatureSpec(dtype='int64', shape=(None,), meaning=None)}
>>> batch = next(ds.batches(2))
>>> batch["tokens"].row_splits.tolist(), batch["tokens"].step_splits.tolist()
([0, 1, 3], [0, 2, 4, 5])
>>> ds[1]["tokens"]
[array([1, 2]), array([3])]

The feature lists are decoded in Python from each record (``decode_sequence_example``),
not by the Rust columnar reader: reading them is slower than reading context features.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from recordforge import _core
from recordforge.errors import DecodeError, SchemaError
from recordforge.ragged import Ragged
from recordforge.schema import DType, FeatureSpec, Schema, infer_schema, kind_of

__all__ = ["RaggedSteps", "infer_sequence_schema"]

_NUMPY = {"int64": np.int64, "float32": np.float32}


@dataclasses.dataclass(frozen=True)
class RaggedSteps:
    """A feature list's column in a batch: record ``i`` has steps
    ``row_splits[i]:row_splits[i + 1]``, step ``k`` (counted over the batch) is
    ``values[step_splits[k]:step_splits[k + 1]]``. ``shape`` is the schema's shape of a
    step. ``tf.RaggedTensor.from_nested_row_splits(values, (row_splits, step_splits))``
    is the tensor TensorFlow parses.

    >>> import numpy as np, recordforge as rf
    >>> col = rf.RaggedSteps(np.arange(5), np.array([0, 2, 3, 5]), np.array([0, 1, 3]))
    >>> len(col), col[0], col[1]
    (2, [array([0, 1])], [array([2]), array([3, 4])])
    >>> col.row_lengths().tolist(), col.steps()[2].tolist()
    ([1, 2], [3, 4])
    """

    values: Any
    step_splits: np.ndarray
    row_splits: np.ndarray
    shape: tuple[int | None, ...] = (None,)

    def __len__(self) -> int:
        return len(self.row_splits) - 1

    def __getitem__(self, i: int) -> Any:
        """Record ``i``'s steps: an array ``(steps, *shape)`` for a fixed step shape,
        else a list of 1-D arrays, one per step."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"record {i} of {n}")
        i = i + n if i < 0 else i
        a, b = int(self.row_splits[i]), int(self.row_splits[i + 1])
        splits = self.step_splits
        if None not in self.shape:
            values = self.values[splits[a] : splits[b]]
            return values.reshape((b - a, *self.shape))
        return [self.values[splits[k] : splits[k + 1]] for k in range(a, b)]

    def row_lengths(self) -> np.ndarray:
        """Steps per record."""
        return np.diff(self.row_splits)

    def steps(self) -> Any:
        """The steps of the whole batch as a :class:`~recordforge.Ragged` (values per
        step)."""
        return Ragged(self.values, self.step_splits)


def feature_list_columns(
    records: Sequence[bytes], lists: Mapping[str, FeatureSpec]
) -> dict[str, RaggedSteps]:
    """The :class:`RaggedSteps` of ``lists`` in ``records``. A record without a list has
    no steps of it; a step whose values are of another kind than the schema's, or, for
    a fixed step shape, another number of values, is a :class:`~recordforge.DecodeError`
    naming the record (in ``records``), the list and the step."""
    chunks: dict[str, list[Any]] = {name: [] for name in lists}
    lengths: dict[str, list[int]] = {name: [] for name in lists}
    steps = {name: np.zeros(len(records), dtype=np.int64) for name in lists}
    widths = {n: math.prod(d or 0 for d in s.shape) if s.fixed else None for n, s in lists.items()}
    for r, record in enumerate(records):
        _, found = _core.decode_sequence_example(record)
        for name, spec in lists.items():
            got = found.get(name)
            if not got:
                continue
            steps[name][r] = len(got)
            sizes = [len(step) for step in got]
            if {kind_of(step) for step in got} - {None, spec.kind}:
                k, kind = next(
                    (k, kind)
                    for k, kind in enumerate(map(kind_of, got))
                    if kind not in (None, spec.kind)
                )
                raise DecodeError(
                    f"record {r}: feature list {name!r}, step {k}: {kind} values, "
                    f"the schema says {spec.dtype}"
                )
            width = widths[name]
            if width is not None and sizes.count(width) != len(sizes):
                k, size = next((k, n) for k, n in enumerate(sizes) if n != width)
                raise DecodeError(
                    f"record {r}: feature list {name!r}, step {k}: {size} values, "
                    f"the schema says shape {spec.shape} ({width})"
                )
            chunks[name].extend(got)
            lengths[name].extend(sizes)
    out = {}
    for name, spec in lists.items():
        step_splits = np.zeros(len(lengths[name]) + 1, dtype=np.int64)
        np.cumsum(lengths[name], out=step_splits[1:])
        row_splits = np.zeros(len(records) + 1, dtype=np.int64)
        np.cumsum(steps[name], out=row_splits[1:])
        out[name] = RaggedSteps(
            _values(spec.kind, chunks[name]), step_splits, row_splits, spec.shape
        )
    return out


def _values(kind: str, chunks: list[Any]) -> Any:
    if kind == "bytes":
        flat = [value for chunk in chunks for value in chunk]
        values = np.empty(len(flat), dtype=object)
        values[:] = flat
        return values
    if not chunks:
        return np.empty(0, dtype=_NUMPY[kind])
    # The steps were checked to be of this kind, or empty float32 (no kind): casting
    # changes no value.
    return np.concatenate(chunks, dtype=_NUMPY[kind], casting="unsafe")


class _ListStats:
    """Kinds and step lengths of feature lists, gathered record by record."""

    def __init__(self) -> None:
        self.kinds: dict[str, str] = {}
        self.lengths: dict[str, set[int]] = {}

    def add(self, lists: Mapping[str, Sequence[Any]]) -> None:
        for name, steps in lists.items():
            self.lengths.setdefault(name, set()).update(len(step) for step in steps)
            for kind in {kind_of(step) for step in steps} - {None}:
                previous = self.kinds.setdefault(name, kind)  # type: ignore[arg-type]
                if previous != kind:
                    raise SchemaError(
                        f"feature list {name!r} is {previous} in one step, {kind} in another"
                    )

    def specs(self) -> dict[str, FeatureSpec]:
        """A step is ``()`` / ``(n,)`` when every step of every record seen holds the
        same number (> 0) of values, ``(None,)`` otherwise."""
        out = {}
        for name, seen in self.lengths.items():
            shape: tuple[int | None, ...] = (None,)
            if len(seen) == 1 and seen != {0}:
                (n,) = seen
                shape = () if n == 1 else (n,)
            dtype: DType = self.kinds.get(name, "float32")  # type: ignore[assignment]
            out[name] = FeatureSpec(dtype=dtype, shape=shape)
        return out


def infer_feature_lists(lists: Iterable[Mapping[str, Sequence[Any]]]) -> dict[str, FeatureSpec]:
    """The step specs of feature lists (the second item of ``decode_sequence_example``)."""
    stats = _ListStats()
    for found in lists:
        stats.add(found)
    return stats.specs()


def sample_schema(records: Iterable[bytes]) -> tuple[Schema, bool]:
    """The context schema of ``records`` (as :func:`~recordforge.infer_schema` infers
    it) and whether any of them has feature lists: a SequenceExample (an Example is a
    SequenceExample without feature lists: the context is its features)."""
    found = False

    def contexts() -> Iterator[Mapping[str, Any]]:
        nonlocal found
        for record in records:
            context, lists = _core.decode_sequence_example(record)
            found = found or bool(lists)
            yield context

    return infer_schema(contexts()), found


def infer_sequence_schema(records: Iterable[bytes]) -> Schema:
    """The schema of serialized ``tf.train.Example`` or ``tf.train.SequenceExample``
    records, in one pass: context features as :func:`~recordforge.infer_schema` infers
    them, and the feature lists' step specs (``()`` / ``(n,)`` when every step holds the
    same number of values, else ``(None,)``).

    >>> import recordforge as rf
    >>> rf.infer_sequence_schema([rf.encode_sequence_example({"y": 1}, {"x": [[0.5], [2.0]]})])
    Schema({'y': FeatureSpec(dtype='int64', shape=(), meaning=None)}, \
feature_lists={'x': FeatureSpec(dtype='float32', shape=(), meaning=None)})
    """
    stats = _ListStats()

    def contexts() -> Iterator[Mapping[str, Any]]:
        for record in records:
            context, lists = _core.decode_sequence_example(record)
            stats.add(lists)
            yield context

    context = infer_schema(contexts())
    return Schema(dict(context), feature_lists=stats.specs())


def schema_of_sample(sample: _core.SchemaSample) -> Schema:
    """The schema of the Examples a :class:`~recordforge._core.SchemaSample` summarised
    (no feature lists), by :func:`~recordforge.infer_schema`'s rule: a feature is fixed
    when every record holds the same number (> 0) of its values."""
    features = {}
    for name, kind, length, present in sample.features():
        shape: tuple[int | None, ...] = (None,)
        if length and present == sample.records:
            shape = () if length == 1 else (length,)
        features[name] = FeatureSpec(dtype=kind or "float32", shape=shape)  # type: ignore[arg-type]
    return Schema(features)
