"""stats: per-feature statistics over every record, in bounded memory."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from recordforge import _core
from recordforge.errors import DecodeError, SchemaError
from recordforge.imageformat import image_dimensions
from recordforge.inspect._common import Paths, Problem, Progress, Result
from recordforge.inspect._decode import (
    DEFAULT_MAX_FEATURES,
    natural_key,
    records_of,
    typed_features,
)
from recordforge.inspect._files import resolve
from recordforge.inspect._values import describe_bytes, image_of, is_text
from recordforge.records import DEFAULT_MAX_RECORD_BYTES
from recordforge.schema import ClassLabel, kind_of


@dataclasses.dataclass(frozen=True, kw_only=True)
class FeatureStats(Result):
    """Statistics of one feature over the records read. ``length``: min, max, mean and
    the most common lengths; ``numbers``: count, min, max, mean, std and NaNs of every
    value; ``top_values``: the most common bytes/text values (images excluded; exact
    unless ``distinct`` reached its cap); ``images``: formats and size ranges;
    ``class_labels``: id, name (from the schema or a ``.../text`` feature beside it)
    and count."""

    name: str
    part: str
    kind: str
    present: int
    missing: int
    empty: int
    length: dict[str, Any]
    numbers: dict[str, Any] | None = None
    top_values: list[tuple[str, int]] | None = None
    distinct: int | None = None
    images: dict[str, Any] | None = None
    class_labels: list[dict[str, Any]] | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Stats(Result):
    """Per-feature statistics over ``records`` records."""

    records: int
    record_type: str
    features: list[FeatureStats]
    notes: list[str]
    problems: list[Problem]


_DISTINCT_CAP = 10_000


def _by_count_length(item: tuple[int, int]) -> tuple[int, int]:
    """Sort key of lengths: the most common first, then the shortest."""
    return -item[1], item[0]


# Arrays of at most this many numbers are summed in Python (see _Acc._add_few).
_SMALL = 8


class _Acc:
    def __init__(self, labels: ClassLabel | None, is_label: bool) -> None:
        self.kind: str | None = None
        self.present = self.empty = 0
        # Plain dicts, Counters made on first use: a record may hold a million features.
        self.lengths: dict[int, int] = {}
        self.n = self.nan = 0
        # Sums of (x - shift) and its square, shift the first finite value seen: the
        # variance of values far from 0 (timestamps) is not lost to rounding.
        self.shift: float | None = None
        self.total = self.total_sq = 0.0
        self.lo = math.inf
        self.hi = -math.inf
        self.values: collections.Counter[bytes] | None = None
        self.capped = False
        self.formats: collections.Counter[str] | None = None
        self.sizes: list[tuple[int, int]] = []
        self.undecodable = 0
        self.labels = labels
        self.is_label = is_label
        self.ids: collections.Counter[int] | None = None
        self.names: dict[int, str] = {}

    def add(self, value: Any, length: int) -> None:
        self.present += 1
        self.lengths[length] = self.lengths.get(length, 0) + 1
        if not len(value):
            self.empty += 1
            return
        kind = kind_of(value)
        self.kind = self.kind or kind
        if isinstance(value, np.ndarray) and len(value) <= _SMALL:
            self._add_few(value)
            return
        if isinstance(value, np.ndarray):
            self._add_numbers(value)
            if self.is_label and value.dtype == np.int64:
                self._ids().update(value.tolist())
            return
        self._add_items(value)

    def _add_numbers(self, values: np.ndarray) -> None:
        """An array of numbers (int64 or float32), NaN and infinities counted apart."""
        v = values.astype(np.float64)
        finite = v[np.isfinite(v)]
        self.nan += len(v) - len(finite)
        if len(finite):
            if self.shift is None:
                self.shift = float(finite[0])
            centred = finite - self.shift
            self.n += len(finite)
            self.total += float(centred.sum())
            self.total_sq += float(np.square(centred).sum())
            self.lo = min(self.lo, float(finite.min()))
            self.hi = max(self.hi, float(finite.max()))

    def _add_items(self, items: Sequence[bytes]) -> None:
        """Bytes values, in the order the records hold them."""
        for item in items:
            image = image_of(item)
            if image is not None:
                if self.formats is None:
                    self.formats = collections.Counter()
                self.formats[image] += 1
                size = image_dimensions(item)
                if size is None:
                    self.undecodable += 1
                else:
                    self.sizes.append(size)
            elif self.values is None:
                self.values = collections.Counter({item[:200]: 1})
            elif (key := item[:200]) in self.values or len(self.values) < _DISTINCT_CAP:
                self.values[key] += 1
            else:
                self.capped = True

    def add_block(self, kind: str | None, values: Any, lengths: np.ndarray, present: int) -> None:
        """:meth:`add` of one feature of a block of records at once: ``lengths`` per
        record, 0 where the feature is missing (``len(lengths) - present`` of them);
        ``values`` all of them in record order (an array, or a list of bytes)."""
        missing = len(lengths) - present
        self.present += present
        found, counts = np.unique(lengths, return_counts=True)
        for length, count in zip(found.tolist(), counts.tolist(), strict=True):
            if length == 0:
                count -= missing
                self.empty += count
            if count:
                self.lengths[length] = self.lengths.get(length, 0) + count
        if not len(values):
            return
        self.kind = self.kind or kind
        if kind == "bytes":
            self._add_items(values)
            return
        self._add_numbers(values)
        if self.is_label and kind == "int64":
            ids, times = np.unique(values, return_counts=True)
            self._ids().update(dict(zip(ids.tolist(), times.tolist(), strict=True)))

    def _ids(self) -> collections.Counter[int]:
        if self.ids is None:
            self.ids = collections.Counter()
        return self.ids

    def _add_few(self, value: np.ndarray) -> None:
        """:meth:`add` of a few numbers, in Python: NumPy's per-call cost is ~20 µs for
        what takes ~1 µs here (a record may hold a million one-value features)."""
        items = value.tolist()
        for x in items:
            f = float(x)
            if not math.isfinite(f):
                self.nan += 1
                continue
            self.n += 1
            if self.shift is None:
                self.shift = f
            d = f - self.shift
            self.total += d
            self.total_sq += d * d
            if f < self.lo:
                self.lo = f
            if f > self.hi:
                self.hi = f
        if self.is_label and value.dtype == np.int64:
            self._ids().update(items)

    def result(self, name: str, part: str, records: int, top: int) -> FeatureStats:
        lengths = self.lengths
        count = sum(lengths.values())
        length = {
            "min": min(lengths) if lengths else None,
            "max": max(lengths) if lengths else None,
            "mean": sum(k * v for k, v in lengths.items()) / count if count else None,
            # (ties: the shorter first, however the records were read)
            "most_common": [[k, v] for k, v in sorted(lengths.items(), key=_by_count_length)[:5]],
        }
        numbers = None
        if self.kind in ("int64", "float32"):
            shift = self.shift or 0.0
            centred = self.total / self.n if self.n else None
            mean = shift + centred if centred is not None else None
            var = self.total_sq / self.n - centred * centred if centred is not None else None
            numbers = {
                "count": self.n,
                "min": self.lo if self.n else None,
                "max": self.hi if self.n else None,
                "mean": mean,
                "std": math.sqrt(max(var, 0.0)) if var is not None else None,
                "nan_or_inf": self.nan,
            }
        top_values = distinct = images = None
        if self.values:
            top_values = [(_value_text(k), v) for k, v in self.values.most_common(top)]
            distinct = len(self.values)
        if self.formats:
            w = np.array([s[0] for s in self.sizes] or [0])
            h = np.array([s[1] for s in self.sizes] or [0])
            images = {
                "formats": dict(self.formats),
                "width": {"min": int(w.min()), "max": int(w.max()), "mean": float(w.mean())},
                "height": {"min": int(h.min()), "max": int(h.max()), "mean": float(h.mean())},
                "most_common_sizes": [
                    [f"{a}x{b}", c] for (a, b), c in collections.Counter(self.sizes).most_common(5)
                ],
                "unreadable_headers": self.undecodable,
            }
        class_labels = None
        if self.ids:
            class_labels = []
            for i, c in sorted(self.ids.items()):
                label = self.names.get(i)
                if self.labels is not None:
                    with contextlib.suppress(ValueError, IndexError):
                        label = self.labels.name_of(i)
                class_labels.append({"id": i, "name": label, "count": c})
        return FeatureStats(
            name=name,
            part=part,
            kind=self.kind or "(empty)",
            present=self.present,
            missing=records - self.present,
            empty=self.empty,
            length=length,
            numbers=numbers,
            top_values=top_values,
            distinct=distinct if not self.capped else None,
            images=images,
            class_labels=class_labels,
        )


def _value_text(value: bytes) -> str:
    return value.decode("utf-8", "replace") if is_text(value) else describe_bytes(value)


def _is_label_name(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return base in ("label", "labels", "category_id", "class", "class_id") or name.endswith(
        "class/label"
    )


def stats(
    paths: Paths,
    *,
    max_records: int | None = None,
    top: int = 10,
    progress: Progress | None = None,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    max_features: int = DEFAULT_MAX_FEATURES,
) -> Stats:
    """Per-feature statistics over every record (or the first ``max_records``):
    presence, lengths, numbers, top values, images, class labels (features with a
    ``ClassLabel`` meaning, or int64 features named like ``label`` / ``category_id``;
    names from the schema or from a ``<prefix>/text`` feature beside ``<prefix>/label``,
    as in Object Detection API records). Memory stays bounded: distinct values are
    counted up to a cap.

    >>> import tempfile, recordforge as rf
    >>> path = tempfile.mktemp(suffix=".tfrecord")
    >>> with rf.TFRecordWriter(path) as w:
    ...     for i in range(4):
    ...         _ = w.write(rf.encode_example({"x": float(i), "c": "ab"[i % 2]}))
    >>> s = {f.name: f for f in rf.inspect.stats(path).features}
    >>> s["x"].numbers["mean"], s["x"].numbers["max"], s["c"].top_values
    (1.5, 3.0, [('a', 2), ('b', 2)])
    """
    items = resolve(paths)
    schema = items[0].manifest.schema if items and items[0].manifest else None
    problems: list[Problem] = []
    acc: dict[tuple[str, str], _Acc] = {}
    kinds: collections.Counter[str] = collections.Counter()
    records = 0
    current: str | None = None
    sizes = {item.name: item.size() for item in items if item.exists()}
    described = _Described(schema, acc, kinds)
    block: list[bytes] = []
    held = 0
    for rec in records_of(items, problems, max_records, max_record_bytes, max_features):
        if progress is not None and rec.file != current:
            if current is not None:
                progress(sizes.get(current, 0))
            current = rec.file
        block.append(rec.data)
        held += len(rec.data)
        records += 1
        if len(block) == _BLOCK or held >= _BLOCK_BYTES:
            described.add(block)
            block = []
            held = 0
    described.add(block)
    if progress is not None and current is not None:
        progress(sizes.get(current, 0))
    record_kind = kinds.most_common(1)[0][0] if kinds else "empty"
    notes = []
    if record_kind == "unknown":
        notes.append("records are not tf.train.Example or SequenceExample: no features")
    order = {name: i for i, name in enumerate(schema)} if schema is not None else {}
    keys = sorted(acc, key=lambda k: (order.get(k[1], len(order)), natural_key(k)))
    result = Stats(
        records=records,
        record_type=record_kind,
        features=[acc[k].result(k[1], k[0], records, top) for k in keys],
        notes=notes,
        problems=problems,
    )
    return result


# Records described at once where they are plain Examples (see _Described.fast): up to
# this many, and this many bytes (images: a block held, its values decoded and made
# bytes objects, is up to ~4x this in memory).
_BLOCK = 1024
_BLOCK_BYTES = 8 << 20
# A block whose features appear in fewer of its records than this on average (sparse
# names: a record of its own features), or in fewer than half of them, or in fewer than
# 2, is described a record at a time: a column costs ~10x a value added alone.
_MIN_PRESENT = 10
# Off: every record described one at a time (the tests' oracle for the blocks).
_FAST = True


class _Described:
    """What :func:`stats` has seen: one accumulator per feature, the record types."""

    def __init__(
        self, schema: Any, acc: dict[tuple[str, str], _Acc], kinds: collections.Counter[str]
    ) -> None:
        self.schema = schema
        self.acc = acc
        self.kinds = kinds

    def of(self, part: str, name: str) -> _Acc:
        a = self.acc.get((part, name))
        if a is None:
            schema = self.schema
            spec = schema.get(name) if schema is not None and part == "feature" else None
            labels = spec.meaning if spec and isinstance(spec.meaning, ClassLabel) else None
            a = self.acc[(part, name)] = _Acc(labels, labels is not None or _is_label_name(name))
        return a

    def add(self, block: list[bytes]) -> None:
        if block and not (_FAST and self.fast(block)):
            for data in block:
                self.one(data)

    def one(self, data: bytes) -> None:
        kind, decoded = typed_features(data)
        self.kinds[kind] += 1
        for part, name, value, steps in decoded:
            self.of(part, name).add(value, steps if steps is not None else len(value))
        _pair_label_names(decoded, self.acc)

    def fast(self, block: list[bytes]) -> bool:
        """Describes a block of plain Examples (printable names, no feature lists, each
        feature of one kind) column by column: the features' kinds summarised in Rust,
        their values decoded into one column each (``_core.decode_batch``), NumPy over
        the numbers: ~20x less time than one record at a time for a table's records.
        False (nothing described) for anything else, which is described a record at a
        time: other record types, kinds that change, ``<x>/label`` beside ``<x>/text``
        (names paired per record), features that few records of the block share."""
        sample = _core.SchemaSample(len(block), 1 << 62)
        try:
            for data in block:
                sample.add(data, "")
        except (DecodeError, SchemaError):
            return False
        features = sample.features()
        shared = min(_MIN_PRESENT, max(2, len(block) // 2))  # (a block of one: alone)
        if len(features) * shared > sum(present for _, _, _, present in features):
            return False
        names = {name for name, _, _, _ in features}
        if sample.lists or not all(n and n.isprintable() and "\ufffd" not in n for n in names):
            return False
        if any(n.endswith("/label") and n[: -len("label")] + "text" in names for n in names):
            return False
        wanted = [(name, kind, None) for name, kind, _, _ in features if kind is not None]
        try:
            columns = _core.decode_batch(block, wanted) if wanted else []
        except (DecodeError, SchemaError):
            return False
        decoded = dict(zip((w[0] for w in wanted), columns, strict=True))
        empty = np.zeros(len(block), np.int64)
        order = np.arange(1, len(block) + 1, dtype=np.int64)
        described: list[tuple[str, str | None, Any, np.ndarray, int]] = []
        for (name, kind, _, present), (count, weighted) in zip(
            features, sample.counts(), strict=True
        ):
            values, splits = decoded.get(name, ([], None))
            lengths = np.diff(splits) if splits is not None else empty
            # The column reader (TensorFlow's rules) must see each record's values as
            # the record reader does (protobuf's: a list held twice, two packed runs, a
            # oneof set twice are merged there): else a record at a time.
            if len(values) != count or int(lengths @ order) % (1 << 64) != weighted:
                return False
            described.append((name, kind, values, lengths, present))
        for name, kind, values, lengths, present in described:
            self.of("feature", name).add_block(kind, values, lengths, present)
        self.kinds["Example"] += len(block)
        return True


def _pair_label_names(
    decoded: Sequence[tuple[str, str, Any, int | None]], acc: Mapping[tuple[str, str], _Acc]
) -> None:
    """Learns id -> name from ``<prefix>/label`` and ``<prefix>/text`` of equal length."""
    values = {(part, name): value for part, name, value, _ in decoded}
    for (part, name), value in values.items():
        if not name.endswith("/label") or not isinstance(value, np.ndarray):
            continue
        text = values.get((part, name[: -len("label")] + "text"))
        if isinstance(text, list) and len(text) == len(value):
            names = acc[(part, name)].names
            for i, t in zip(value.tolist(), text, strict=True):
                if t and i not in names:
                    names[i] = t.decode("utf-8", "replace")
