"""info and head: what files hold (splits, shards, records, features) and their first
records, decoded."""

from __future__ import annotations

import collections
import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import Any

from recordforge.inspect._common import Paths, Problem, Progress, Result
from recordforge.inspect._decode import (
    DEFAULT_MAX_FEATURES,
    decode_elwc,
    decoded_features,
    natural_key,
    parse_record,
    record_type,
    records_of,
    typed_features,
)
from recordforge.inspect._files import resolve
from recordforge.inspect._framing import count
from recordforge.inspect._values import image_of, is_text
from recordforge.records import DEFAULT_MAX_RECORD_BYTES
from recordforge.schema import BBox, ClassLabel, Image, Schema, Text, kind_of

# --------------------------------------------------------------------------------------
# info


@dataclasses.dataclass(frozen=True, kw_only=True)
class FileInfo(Result):
    """One file: its split (from ``dataset.json``), records (``None`` when it cannot be
    counted), size on disk, compression and whether an ``.idx`` file is beside it."""

    path: str
    split: str | None
    records: int | None
    bytes: int
    compression: str | None
    index: bool


@dataclasses.dataclass(frozen=True, kw_only=True)
class FeatureInfo(Result):
    """One feature: ``part`` is ``feature`` (Example), ``context`` / ``feature_list``
    (SequenceExample) or ``context`` / ``examples`` (ELWC); ``dtype`` and ``shape`` as in
    a :class:`~recordforge.FeatureSpec`; lengths seen in the scanned records (steps for
    feature lists and ELWC examples); in how many scanned records it was present."""

    name: str
    part: str
    kind: str
    dtype: str
    shape: str
    min_length: int | None
    max_length: int | None
    present: int
    meaning: str | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Info(Result):
    """A dataset's or files' description; ``schema_source`` says where the features come
    from (``dataset.json`` or inferred from ``scanned`` records)."""

    record_type: str
    records: int | None
    bytes: int
    files: list[FileInfo]
    splits: dict[str, dict[str, int]]
    compression: list[str | None]
    schema_source: str | None
    scanned: int
    features: list[FeatureInfo]
    notes: list[str]
    problems: list[Problem]


def _meaning_text(meaning: Any) -> str | None:
    if isinstance(meaning, Image):
        return f"image ({meaning.format or 'mixed'})"
    if isinstance(meaning, ClassLabel):
        return f"class_label ({len(meaning.names)} names)"
    if isinstance(meaning, BBox):
        return f"bbox ({meaning.layout}{', normalized' if meaning.normalized else ''})"
    if isinstance(meaning, Text):
        return "text"
    return None


@functools.lru_cache(maxsize=1024)
def _shape_text(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


class _Lengths:
    """Kind, lengths, presence and image format seen for one feature while scanning."""

    def __init__(self) -> None:
        self.kind: str | None = None
        self.min: int | None = None
        self.max: int | None = None
        self.present = 0
        self.text = True
        self.image: str | None = None
        self.per_step: set[int] = set()

    def add(self, value: Any, length: int) -> None:
        self.present += 1
        self.min = length if self.min is None else min(self.min, length)
        self.max = length if self.max is None else max(self.max, length)
        kind = kind_of(value)
        if kind is not None:
            self.kind = self.kind or kind
        if isinstance(value, list) and value:
            first = value[0]
            image = image_of(first)
            if image is not None:
                self.image = image
            if self.text and (image is not None or not is_text(first)):
                self.text = False


def info(
    paths: Paths,
    *,
    scan: int | None = 1000,
    progress: Progress | None = None,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    max_features: int = DEFAULT_MAX_FEATURES,
) -> Info:
    """Splits, shards, records, sizes, compression, and the features: from
    ``dataset.json`` when there is one, otherwise inferred from the first ``scan``
    records (``None``: all) — kind, fixed or variable length, the lengths seen. Records
    are counted from the manifest or by walking the framing. Records that are not
    ``tf.train.Example`` are reported as what they are (SequenceExample, TF-Ranking ELWC,
    unknown).

    >>> import tempfile, numpy as np, recordforge as rf
    >>> path = tempfile.mktemp(suffix=".tfrecord")
    >>> with rf.TFRecordWriter(path) as w:
    ...     for i in range(3):
    ...         _ = w.write(rf.encode_example({"id": i, "tags": np.array(["a"] * i, np.bytes_)}))
    >>> result = rf.inspect.info(path)
    >>> result.record_type, result.records
    ('Example', 3)
    >>> [(f.name, f.dtype, f.shape, f.min_length, f.max_length) for f in result.features]
    [('id', 'int64', '()', 1, 1), ('tags', 'string', '(None,)', 0, 2)]
    """
    items = resolve(paths)
    problems: list[Problem] = []
    counted = count(paths, max_record_bytes=max_record_bytes)
    problems.extend(counted.problems)
    by_path = {f.path: f for f in counted.files}
    files: list[FileInfo] = []
    splits: dict[str, dict[str, int]] = {}
    for item in items:
        fc = by_path.get(item.name)
        there = item.exists()
        files.append(
            FileInfo(
                path=item.name,
                split=item.split,
                records=fc.records if fc else None,
                bytes=item.size() if there else 0,
                compression=item.compression if there else None,
                index=item.has_index(),
            )
        )
        if item.split is not None:
            s = splits.setdefault(item.split, {"shards": 0, "records": 0, "bytes": 0})
            s["shards"] += 1
            s["records"] += fc.records if fc else 0
            s["bytes"] += files[-1].bytes
        if progress is not None:
            progress(files[-1].bytes)
    kinds: collections.Counter[str] = collections.Counter()
    acc: dict[tuple[str, str], _Lengths] = {}
    scanned = 0
    for rec in records_of(items, problems, scan, max_record_bytes, max_features):
        kind, decoded = typed_features(rec.data)
        kinds[kind] += 1
        scanned += 1
        for part, name, value, steps in decoded:
            a = acc.get((part, name))
            if a is None:
                a = acc[(part, name)] = _Lengths()
            a.add(value, steps if steps is not None else len(value))
            if steps:
                a.per_step.add(len(value) // steps if steps else 0)
    record_kind = kinds.most_common(1)[0][0] if kinds else "empty"
    notes = []
    if len(kinds) > 1:
        notes.append(f"mixed record types in the scanned records: {dict(kinds)}")
    if record_kind == "unknown":
        notes.append(
            "records are not tf.train.Example or SequenceExample (nor TF-Ranking ELWC); "
            "no features to show"
        )
    if record_kind == "ExampleListWithContext":
        notes.append(
            "records are TF-Ranking ExampleListWithContext (ELWC), not tf.train.Example: "
            "features of the context and of the listed examples are shown; lengths of "
            "'examples' features are the number of examples that have them"
        )
    schema = items[0].manifest.schema if items[0].manifest else None
    features = _feature_infos(acc, schema, scanned)
    total_records = (
        None if any(f.records is None for f in files) else sum(f.records or 0 for f in files)
    )
    result = Info(
        record_type=record_kind,
        records=total_records,
        bytes=sum(f.bytes for f in files),
        files=files,
        splits=splits,
        compression=sorted({f.compression for f in files}, key=str),
        schema_source="dataset.json"
        if schema is not None
        else (f"inferred from {scanned} record(s)" if acc else None),
        scanned=scanned,
        features=features,
        notes=notes,
        problems=problems,
    )
    return result


def _feature_infos(
    acc: Mapping[tuple[str, str], _Lengths], schema: Schema | None, scanned: int
) -> list[FeatureInfo]:
    out = []
    if schema is not None:
        for name, spec in schema.items():
            a = acc.get(("feature", name)) or _Lengths()
            out.append(
                FeatureInfo(
                    name=name,
                    part="feature",
                    kind=spec.kind,
                    dtype=spec.dtype,
                    shape=_shape_text(tuple(spec.shape)),
                    min_length=a.min,
                    max_length=a.max,
                    present=a.present,
                    meaning=_meaning_text(spec.meaning),
                )
            )
        known = set(schema) | {f"{n}/row_lengths" for n, s in schema.items() if s.ragged}
        extra = [k for k in acc if k[1] not in known]
    else:
        extra = sorted(acc, key=natural_key)
    for part, name in extra:
        a = acc[(part, name)]
        dtype = a.kind or "(empty)"
        if a.kind == "bytes" and a.text:
            dtype = "string"
        always = a.present == scanned and part in ("feature", "context")
        shape: tuple[int | None, ...] = (None,)
        if always and a.min == a.max and a.min is not None:
            shape = () if a.min == 1 else (a.min,)
        if part in ("feature_list", "examples"):
            shape = (None, a.per_step.pop()) if len(a.per_step) == 1 else (None, None)
        meaning = f"image ({a.image.lower()})" if a.image else None
        out.append(
            FeatureInfo(
                name=name,
                part=part,
                kind=a.kind or "(empty)",
                dtype=dtype,
                shape=_shape_text(shape),
                min_length=a.min,
                max_length=a.max,
                present=a.present,
                meaning=meaning,
            )
        )
    return out


# --------------------------------------------------------------------------------------
# head


@dataclasses.dataclass(frozen=True, kw_only=True)
class HeadRecord(Result):
    """One decoded record: ``features`` are its Example features (a SequenceExample's
    context, an ELWC's context), ``feature_lists`` a SequenceExample's lists of values,
    ``examples`` an ELWC's examples; ``raw`` the bytes of a record of unknown type."""

    file: str
    index: int
    offset: int | None
    size: int
    record_type: str
    features: dict[str, Any]
    feature_lists: dict[str, list[Any]] | None = None
    examples: list[dict[str, Any]] | None = None
    raw: bytes | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class HeadResult(Result):
    """The first records, and the problem that stopped reading a file, if any."""

    records: list[HeadRecord]
    problems: list[Problem]


def head(
    paths: Paths,
    *,
    n: int = 5,
    features: Sequence[str] | None = None,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    max_features: int = DEFAULT_MAX_FEATURES,
) -> HeadResult:
    """The first ``n`` records, decoded (only ``features`` when given; a name no shown
    record has raises ``ValueError`` listing the names there are).

    >>> import tempfile, recordforge as rf
    >>> path = tempfile.mktemp(suffix=".tfrecord")
    >>> with rf.TFRecordWriter(path) as w:
    ...     _ = w.write_many([rf.encode_example({"id": i, "name": "cat"}) for i in range(9)])
    >>> result = rf.inspect.head(path, n=2, features=["id"])
    >>> [(r.index, r.offset, r.features) for r in result.records]
    [(0, 0, {'id': array([0])}), (1, 48, {'id': array([1])})]
    """
    problems: list[Problem] = []
    out = []
    wanted = list(features) if features else None
    items = resolve(paths)
    for rec in records_of(items, problems, n, max_record_bytes, max_features):
        kind, parsed, lists = parse_record(rec.data)
        feats: dict[str, Any] = parsed or {}
        examples = raw = None
        if kind == "ExampleListWithContext":
            examples, feats = decode_elwc(rec.data)
        elif kind not in ("Example", "SequenceExample"):
            raw = rec.data
        if wanted is not None:
            feats = {k: feats[k] for k in wanted if k in feats}
            if lists is not None:
                lists = {k: lists[k] for k in wanted if k in lists}
            if examples is not None:
                examples = [{k: ex[k] for k in wanted if k in ex} for ex in examples]
        out.append(
            HeadRecord(
                file=str(rec.file),
                index=rec.index,
                offset=rec.offset,
                size=len(rec.data),
                record_type=kind,
                features=feats,
                feature_lists=lists,
                examples=examples,
                raw=raw,
            )
        )
    if wanted is not None and out:
        shown = {
            k
            for r in out
            for k in [
                *r.features,
                *(r.feature_lists or {}),
                *(k for e in r.examples or [] for k in e),
            ]
        }
        missing = [k for k in wanted if k not in shown]
        if missing:
            every: set[str] = set()
            for rec in records_of(items, [], n, max_record_bytes, max_features):
                every.update(
                    name for _, name, _, _ in decoded_features(rec.data, record_type(rec.data))
                )
            raise ValueError(
                f"feature(s) {', '.join(map(repr, missing))} not in the first {len(out)} "
                f"record(s); they have: {', '.join(sorted(every)) or 'no features'}"
            )
    return HeadResult(records=out, problems=problems)
