"""Dataset schemas: typed feature specs that round-trip to JSON and map to TensorFlow.

A :class:`Schema` maps feature names to :class:`FeatureSpec` (dtype, shape with ``None``
for ragged dimensions, optional meaning). It is stored in ``dataset.json``, generates
the feature description ``tf.io.parse_example`` needs, and can be inferred by scanning
records someone else wrote. A schema of ``tf.train.SequenceExample`` records also has
``feature_lists``: for each, the spec of one step (``()``, a fixed shape, or ``(None,)``
for any number of values per step).

>>> import recordforge as rf
>>> schema = rf.Schema({
...     "label": rf.FeatureSpec(dtype="int64", meaning=rf.ClassLabel(names=("cat", "dog"))),
...     "bbox": rf.FeatureSpec(dtype="float32", shape=(4,)),
...     "tokens": rf.FeatureSpec(dtype="string", shape=(None,)),
... })
>>> rf.Schema.from_json(schema.to_json()) == schema
True
>>> sorted(schema.to_json()["features"]["label"])
['dtype', 'meaning', 'shape']
"""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Literal, TypeAlias

import numpy as np

from recordforge._jsonfields import Field, _shown
from recordforge.errors import SchemaError

__all__ = [
    "FORMAT_VERSION",
    "BBox",
    "ClassLabel",
    "FeatureSpec",
    "Image",
    "Meaning",
    "Schema",
    "Text",
    "infer_schema",
]

FORMAT_VERSION = 1
# The JSON of a schema with feature lists: a recordforge that knows only version 1
# refuses it, instead of reading the context and silently dropping the lists.
_SEQUENCE_FORMAT_VERSION = 2
DType = Literal["int64", "float32", "bytes", "string"]
DTYPES: tuple[str, ...] = ("int64", "float32", "bytes", "string")
KIND_OF: dict[str, str] = {
    "int64": "int64",
    "float32": "float32",
    "bytes": "bytes",
    "string": "bytes",
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Image:
    """The feature holds encoded images (``format``: ``jpeg``, ``png``, ... or ``None``: mixed)."""

    format: str | None = None
    tag = "image"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClassLabel:
    """Integer class ids; ``names`` maps id -> name, or ``ids`` lists the ids the names
    belong to when they are not 0..n-1 (COCO's 1-90 with gaps)."""

    names: tuple[str, ...]
    ids: tuple[int, ...] | None = None
    tag = "class_label"

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(self.names))
        if self.ids is not None:
            object.__setattr__(self, "ids", tuple(int(i) for i in self.ids))
            if len(self.ids) != len(self.names):
                raise SchemaError(f"class_label: {len(self.ids)} ids for {len(self.names)} names")

    def name_of(self, class_id: int) -> str:
        """The name of ``class_id``."""
        if self.ids is None:
            return self.names[class_id]
        return self.names[self.ids.index(class_id)]


@dataclasses.dataclass(frozen=True, kw_only=True)
class BBox:
    """Bounding boxes; ``layout`` names the coordinate order, e.g. ``"xywh"`` (COCO,
    pixels) or ``"ymin,xmin,ymax,xmax"``; ``normalized`` when in [0, 1]."""

    layout: str
    normalized: bool = False
    tag = "bbox"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Text:
    """UTF-8 text."""

    tag = "text"


Meaning: TypeAlias = Image | ClassLabel | BBox | Text
MEANINGS: dict[str, type[Any]] = {m.tag: m for m in (Image, ClassLabel, BBox, Text)}


@dataclasses.dataclass(frozen=True, kw_only=True)
class FeatureSpec:
    """One feature: ``dtype``, ``shape`` (``()`` one value, ``(n,)`` exactly n values,
    ``(None,)`` any number, ``(None, None)`` ragged rows stored as values plus a
    ``<name>/row_lengths`` int64 feature), and an optional meaning."""

    dtype: DType
    shape: tuple[int | None, ...] = ()
    meaning: Meaning | None = None

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise SchemaError(f"unknown dtype {self.dtype!r}: expected one of {DTYPES}")
        shape = tuple(self.shape)
        object.__setattr__(self, "shape", shape)
        for dim in shape:
            if dim is not None and (not isinstance(dim, int) or dim < 0):
                raise SchemaError(f"shape {shape}: dimensions are ints >= 0 or None")
        if None in shape[1:] and shape[:1] != (None,):
            raise SchemaError(f"shape {shape}: only leading dimensions may be None")
        if len(shape) > 2 and None in shape[1:]:
            raise SchemaError(f"shape {shape}: one ragged level is supported")

    @property
    def kind(self) -> str:
        """The tf.train.Feature kind: ``int64``, ``float32`` or ``bytes``."""
        return KIND_OF[self.dtype]

    @property
    def fixed(self) -> bool:
        """True when every record has the same number of values."""
        return None not in self.shape

    @property
    def ragged(self) -> bool:
        """True for ``(None, None)``: values plus ``<name>/row_lengths``."""
        return len(self.shape) == 2 and self.shape[1] is None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"dtype": self.dtype, "shape": list(self.shape)}
        if self.meaning is not None:
            fields = dataclasses.asdict(self.meaning)
            out["meaning"] = {"type": self.meaning.tag, **_jsonable(fields)}
        return out

    @classmethod
    def from_json(cls, data: Any, *, field: Field | None = None) -> FeatureSpec:
        """A spec from its JSON form, every field checked (``field`` names where it is,
        for the errors)."""
        field = field or Field("feature spec")
        data = field.mapping(data)
        meaning = None
        if data.get("meaning") is not None:
            meaning = _meaning_from_json(data["meaning"], field["meaning"])
        dtype = field["dtype"].text(field.get(data, "dtype"))
        shape_field = field["shape"]
        shape = shape_field.array(data.get("shape", []))
        for k, dim in enumerate(shape):
            if dim is not None:
                shape_field[k].integer(dim, low=0, high=_MAX_VALUES)
        if math.prod(d for d in shape if d is not None) > _MAX_VALUES:
            raise shape_field.wrong(f"at most {_MAX_VALUES} values per record", shape)
        try:
            return cls(dtype=dtype, shape=tuple(shape), meaning=meaning)
        except SchemaError as e:
            raise field.error(str(e)) from None


# A tf.train.Example is a protobuf message, under 2 GiB: no feature holds more values.
_MAX_VALUES = (1 << 31) - 1


def _meaning_from_json(data: Any, field: Field) -> Meaning:
    data = field.mapping(data)
    tag = data.get("type")
    if tag not in MEANINGS:
        raise field["type"].error(
            f"unknown meaning {_shown(tag)}: expected one of {sorted(MEANINGS)}"
        )
    fields: dict[str, Any] = {}
    for key, value in data.items():
        at = field[key]
        if key == "type":
            continue
        if tag == "image" and key == "format":
            fields[key] = at.text(value, optional=True)
        elif tag == "class_label" and key == "names":
            fields[key] = tuple(at[k].text(v) for k, v in enumerate(at.array(value)))
        elif tag == "class_label" and key == "ids":
            if value is not None:
                fields[key] = tuple(at[k].integer(v) for k, v in enumerate(at.array(value)))
        elif tag == "bbox" and key == "layout":
            fields[key] = at.text(value)
        elif tag == "bbox" and key == "normalized":
            fields[key] = at.flag(value)
        else:
            raise at.error(f"not a field of a {tag!r} meaning")
    try:
        meaning: Meaning = MEANINGS[tag](**fields)
    except TypeError as e:  # a required field missing
        raise field.error(f"incomplete {tag!r} meaning: {e}") from None
    except SchemaError as e:
        raise field.error(str(e)) from None
    return meaning


def _jsonable(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}


class Schema(Mapping[str, FeatureSpec]):
    """An ordered mapping of feature name -> :class:`FeatureSpec`: the features of a
    ``tf.train.Example``, or the context features of a ``tf.train.SequenceExample``,
    whose ``feature_lists`` map each list's name to the spec of one of its steps
    (``()`` one value, a fixed shape, or ``(None,)`` any number of values per step).
    The mapping itself holds the context features only; a name is in one of the two.

    >>> import recordforge as rf
    >>> s = rf.Schema({"id": rf.FeatureSpec(dtype="int64")},
    ...               feature_lists={"tokens": rf.FeatureSpec(dtype="string", shape=(None,))})
    >>> list(s), list(s.feature_lists), s.to_json()["format_version"]
    (['id'], ['tokens'], 2)
    """

    def __init__(
        self,
        features: Mapping[str, FeatureSpec] | None = None,
        *,
        feature_lists: Mapping[str, FeatureSpec] | None = None,
    ) -> None:
        self._features: dict[str, FeatureSpec] = dict(features or {})
        self._lists: dict[str, FeatureSpec] = dict(feature_lists or {})
        for name, spec in self._features.items():
            if not isinstance(spec, FeatureSpec):
                raise SchemaError(f"feature {name!r}: expected a FeatureSpec, not {spec!r}")
            if spec.ragged and f"{name}/row_lengths" in self._features:
                raise SchemaError(f"feature {name!r} is ragged; {name}/row_lengths is reserved")
        reserved = {f"{n}/row_lengths" for n, s in self._features.items() if s.ragged}
        for name, spec in self._lists.items():
            if not isinstance(spec, FeatureSpec):
                raise SchemaError(f"feature list {name!r}: expected a FeatureSpec, not {spec!r}")
            if not spec.fixed and spec.shape != (None,):
                raise SchemaError(
                    f"feature list {name!r}: shape {spec.shape}: a step holds a fixed shape "
                    "or (None,) values"
                )
            if name in self._features or name in reserved:
                raise SchemaError(f"{name!r} is both a context feature and a feature list")

    @property
    def feature_lists(self) -> Mapping[str, FeatureSpec]:
        """The feature lists of ``tf.train.SequenceExample`` records: name -> spec of one
        step (empty for ``tf.train.Example`` records)."""
        return types.MappingProxyType(self._lists)

    def __getitem__(self, name: str) -> FeatureSpec:
        return self._features[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._features)

    def __len__(self) -> int:
        return len(self._features)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Schema)
            and self._features == other._features
            and self._lists == other._lists
        )

    def __hash__(self) -> int:
        return hash((tuple(self._features.items()), tuple(self._lists.items())))

    def __repr__(self) -> str:
        if self._lists:
            return f"Schema({self._features!r}, feature_lists={self._lists!r})"
        return f"Schema({self._features!r})"

    def to_json(self) -> dict[str, Any]:
        """The JSON form stored in ``dataset.json`` (``format_version`` 2 when it has
        feature lists, under ``"feature_lists"``; 1 otherwise)."""
        out: dict[str, Any] = {
            "format_version": _SEQUENCE_FORMAT_VERSION if self._lists else FORMAT_VERSION,
            "features": {name: spec.to_json() for name, spec in self._features.items()},
        }
        if self._lists:
            out["feature_lists"] = {name: spec.to_json() for name, spec in self._lists.items()}
        return out

    @classmethod
    def from_json(cls, data: Any, *, field: Field | None = None) -> Schema:
        """A schema from its JSON form (:meth:`to_json`), every field checked: a bad one
        is a :class:`~recordforge.SchemaError` naming it (``field``: where the schema is,
        e.g. in ``dataset.json``)."""
        field = field or Field("schema")
        data = field.mapping(data)
        version = data.get("format_version")
        known = (FORMAT_VERSION, _SEQUENCE_FORMAT_VERSION)
        if type(version) is not int or version not in known:
            raise field["format_version"].error(
                f"{_shown(version)} is not supported (expected {FORMAT_VERSION} or "
                f"{_SEQUENCE_FORMAT_VERSION})"
            )
        features = field["features"].mapping(field.get(data, "features"))
        lists: Mapping[str, Any] = {}
        if "feature_lists" in data:
            if version != _SEQUENCE_FORMAT_VERSION:
                raise field["feature_lists"].error(
                    f"feature lists need format_version {_SEQUENCE_FORMAT_VERSION}"
                )
            lists = field["feature_lists"].mapping(data["feature_lists"])
        return cls(
            {
                name: FeatureSpec.from_json(s, field=field["features"][name])
                for name, s in features.items()
            },
            feature_lists={
                name: FeatureSpec.from_json(s, field=field["feature_lists"][name])
                for name, s in lists.items()
            },
        )

    def to_tf_feature_description(self) -> dict[str, Any]:
        """The feature description ``tf.io.parse_example`` takes (imports TensorFlow):
        ``FixedLenFeature`` for fixed shapes, ``VarLenFeature`` for ``(None,)`` and
        ``RaggedFeature`` with row lengths for ``(None, None)``. For SequenceExample
        records it describes the context (``context_features`` of
        ``tf.io.parse_sequence_example``); see :meth:`to_tf_sequence_features`."""
        import tensorflow as tf

        tf_dtype = {"int64": tf.int64, "float32": tf.float32, "bytes": tf.string}
        out: dict[str, Any] = {}
        for name, spec in self._features.items():
            dtype = tf_dtype[spec.kind]
            if spec.fixed:
                out[name] = tf.io.FixedLenFeature(spec.shape, dtype)
            elif spec.ragged:
                out[name] = tf.io.RaggedFeature(
                    dtype,
                    value_key=name,
                    partitions=[tf.io.RaggedFeature.RowLengths(f"{name}/row_lengths")],
                )
            elif len(spec.shape) == 1:
                out[name] = tf.io.VarLenFeature(dtype)
            else:
                out[name] = tf.io.FixedLenSequenceFeature(spec.shape[1:], dtype, allow_missing=True)
        return out

    def to_tf_sequence_features(self) -> dict[str, Any]:
        """The ``sequence_features`` of ``tf.io.parse_sequence_example`` for the feature
        lists (imports TensorFlow): a ``RaggedFeature`` each, which TensorFlow parses to
        a ``tf.RaggedTensor`` ``[batch, (steps), (values)]`` (``[(steps), (values)]``
        for ``parse_single_sequence_example``), whatever the step shape."""
        import tensorflow as tf

        tf_dtype = {"int64": tf.int64, "float32": tf.float32, "bytes": tf.string}
        return {name: tf.io.RaggedFeature(tf_dtype[s.kind]) for name, s in self._lists.items()}


def infer_schema(examples: Iterable[Mapping[str, Any]]) -> Schema:
    """Infers a schema from decoded examples (``decode_example`` output): the kind of
    each feature, and ``()`` / ``(n,)`` when every example has the same number (> 0) of
    values, ``(None,)`` otherwise. A feature missing from some examples is ``(None,)``.

    >>> import numpy as np, recordforge as rf
    >>> rf.infer_schema([{"a": np.array([1]), "b": [b"x", b"y"]}, {"a": np.array([2]), "b": []}])
    Schema({'a': FeatureSpec(dtype='int64', shape=(), meaning=None), \
'b': FeatureSpec(dtype='bytes', shape=(None,), meaning=None)})
    """
    kinds: dict[str, str] = {}
    lengths: dict[str, set[int]] = {}
    present: dict[str, int] = {}
    count = 0
    for example in examples:
        count += 1
        for name, value in example.items():
            present[name] = present.get(name, 0) + 1
            lengths.setdefault(name, set()).add(len(value))
            kind = kind_of(value)
            if kind is None:
                continue
            previous = kinds.setdefault(name, kind)
            if previous != kind:
                raise SchemaError(
                    f"feature {name!r} is {previous} in one record, {kind} in another"
                )
    features = {}
    for name, seen in lengths.items():
        shape: tuple[int | None, ...] = (None,)
        # Always empty says nothing about a length (a sample of a nullable column).
        if len(seen) == 1 and present[name] == count and seen != {0}:
            (n,) = seen
            shape = () if n == 1 else (n,)
        dtype: DType = kinds.get(name, "float32")  # type: ignore[assignment]
        features[name] = FeatureSpec(dtype=dtype, shape=shape)
    return Schema(features)


def kind_of(value: Any) -> str | None:
    """The kind of a decoded value; ``None`` for an empty float32 array, which is also
    what a kind-less Feature decodes to and so says nothing about the kind."""
    if isinstance(value, np.ndarray):
        if value.dtype == np.int64:
            return "int64"
        return "float32" if len(value) else None
    return "bytes"
