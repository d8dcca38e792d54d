"""What a record is (Example, SequenceExample, TF-Ranking ELWC or unknown), its
features, and the records of many files read in order."""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import numpy as np

from recordforge import _core
from recordforge._stream import Records
from recordforge.errors import CorruptRecordError, DecodeError
from recordforge.inspect._common import Problem
from recordforge.inspect._files import InputFile
from recordforge.records import DEFAULT_MAX_RECORD_BYTES

#: The most features a record may have to be described by ``head``, ``info``, ``stats``
#: and ``preview`` (``max_features=``, ``--max-features``). Each feature becomes Python
#: objects (~2 KB and tens of µs in ``stats``): a record of a million features costs
#: gigabytes. One with more is a problem naming it, counted before it is decoded.
DEFAULT_MAX_FEATURES = 100_000

RecordType = Literal["Example", "SequenceExample", "ExampleListWithContext", "unknown", "empty"]


def _varint(data: bytes | memoryview, i: int) -> tuple[int, int] | None:
    value = shift = 0
    for k in range(i, min(i + 10, len(data))):
        b = data[k]
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, k + 1
        shift += 7
    return None


def _fields(data: bytes | memoryview) -> list[tuple[int, int, bytes | memoryview]] | None:
    """``(field number, wire type, payload)`` of a protobuf message's top-level fields,
    or ``None`` when the bytes are not a well-formed message."""
    out: list[tuple[int, int, bytes | memoryview]] = []
    i, n = 0, len(data)
    while i < n:
        key = _varint(data, i)
        if key is None:
            return None
        tag, i = key
        field, wire = tag >> 3, tag & 7
        if field == 0:
            return None
        if wire == 2:
            length = _varint(data, i)
            if length is None or length[1] + length[0] > n:
                return None
            out.append((field, wire, data[length[1] : length[1] + length[0]]))
            i = length[1] + length[0]
        elif wire == 0:
            value = _varint(data, i)
            if value is None:
                return None
            i = value[1]
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
        else:
            return None
    return out if i == n else None


def _names_ok(features: Mapping[str, Any]) -> bool:
    return all(name and name.isprintable() for name in features)


def _as_example(data: bytes | memoryview) -> dict[str, Any] | None:
    try:
        ex = _core.decode_example(data)
    except DecodeError:
        return None
    return ex if _names_ok(ex) else None


def record_type(data: bytes | memoryview) -> RecordType:
    """What a serialized record is: ``Example``, ``SequenceExample`` (one with at least
    one feature list; without, it is indistinguishable from an Example),
    ``ExampleListWithContext`` (TF-Ranking's ELWC) or ``unknown``. A record that decodes
    as an Example only by reading message bytes as feature names (ELWC records do) is
    not taken for one.

    >>> import recordforge as rf
    >>> rf.inspect.record_type(rf.encode_example({"a": 1}))
    'Example'
    >>> rf.inspect.record_type(rf.encode_sequence_example({"a": 1}, {"b": [[1], [2]]}))
    'SequenceExample'
    >>> ex = rf.encode_example({"q": "query"})
    >>> rf.inspect.record_type(b"\\x0a" + bytes([len(ex)]) + ex)  # ELWC: examples=[ex]
    'ExampleListWithContext'
    >>> rf.inspect.record_type(b"hello")
    'unknown'
    """
    return parse_record(data)[0]


def parse_record(
    data: bytes | memoryview,
) -> tuple[RecordType, dict[str, Any] | None, dict[str, Any] | None]:
    """:func:`record_type`, with the record's features (an Example's, a SequenceExample's
    context) and feature lists as decoded on the way: each record is decoded once, not
    once per question (a record of a million features takes seconds to decode)."""
    context = lists = None
    with contextlib.suppress(DecodeError):
        context, lists = _core.decode_sequence_example(data)
    if context is not None and lists and _names_ok(context) and _names_ok(lists):
        return "SequenceExample", context, lists
    # A SequenceExample parse that succeeds is the Example parse (field 2 aside, which an
    # Example skips); one that fails may still be an Example whose field 2 is no list.
    example = context if context is not None else _as_example(data)
    if example is not None and _names_ok(example):
        return "Example", example, None
    fields = _fields(data)
    if (
        fields
        and all(f in (1, 2) and w == 2 for f, w, _ in fields)
        and all(_as_example(payload) is not None for _, _, payload in fields)
    ):
        return "ExampleListWithContext", None, None
    return "unknown", None, None


def decode_elwc(data: bytes | memoryview) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The examples and the context of an ELWC record (checked by ``record_type``)."""
    examples, context = [], {}
    for field, _, payload in _fields(data) or []:
        ex = _as_example(payload) or {}
        if field == 1:
            examples.append(ex)
        else:
            context = ex
    return examples, context


# --------------------------------------------------------------------------------------
# Reading records for info / head / stats / preview


@dataclasses.dataclass(frozen=True)
class Record:
    file: str
    index: int
    offset: int | None
    data: bytes


def records_of(
    items: Sequence[InputFile],
    problems: list[Problem],
    limit: int | None = None,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    max_features: int = DEFAULT_MAX_FEATURES,
) -> Iterator[Record]:
    """Records of the files in order (CRCs checked; a record over ``max_record_bytes``
    is damage, refused before it is read); a damaged file adds a problem and the
    iteration goes on with the next file. A record of more than ``max_features``
    features (counted before anything is decoded) is a problem and is passed over."""
    produced = 0
    for item in items:
        index = 0
        try:
            with Records(item.name, max_record_bytes=max_record_bytes) as it:
                for data in it:
                    if limit is not None and produced >= limit:
                        return
                    n = _core.count_features(data)
                    if n > max_features:
                        problems.append(
                            Problem(
                                file=item.name,
                                kind="features",
                                record=index,
                                offset=it.offset,
                                message=f"{n:,} features, more than the limit of "
                                f"{max_features:,} (max_features, --max-features): not "
                                "described",
                            )
                        )
                        index += 1
                        continue
                    yield Record(item.name, index, it.offset, data)
                    index += 1
                    produced += 1
            if item.shard is not None and index != item.shard.records:
                problems.append(
                    Problem(
                        file=item.name,
                        kind="manifest",
                        message=f"{index:,} records where dataset.json says "
                        f"{item.shard.records:,} (the file was changed since it was "
                        "written; see verify)",
                    )
                )
        except CorruptRecordError as e:
            problems.append(
                Problem(
                    file=item.name,
                    kind="crc" if "CRC" in e.reason else "framing",
                    record=index,
                    offset=e.offset,
                    message=f"{e.reason} (the rest of this file is skipped; see verify)",
                )
            )


def typed_features(data: bytes) -> tuple[RecordType, list[tuple[str, str, Any, int | None]]]:
    """:func:`record_type` and :func:`decoded_features` of a record, decoding it once."""
    kind, features, lists = parse_record(data)
    return kind, decoded_features(data, kind, features, lists)


def decoded_features(
    data: bytes,
    kind: RecordType,
    features: dict[str, Any] | None = None,
    lists: dict[str, Any] | None = None,
) -> list[tuple[str, str, Any, int | None]]:
    """``(part, name, value, steps)`` of a record's features; ``steps`` is the number of
    steps of a feature list (its values are then concatenated). ``features`` and
    ``lists``: the record as :func:`parse_record` decoded it, when it has."""
    out: list[tuple[str, str, Any, int | None]] = []
    if kind == "Example":
        if features is None:
            features = _core.decode_example(data)
        out.extend(("feature", n, v, None) for n, v in features.items())
    elif kind == "SequenceExample":
        if features is None or lists is None:
            features, lists = _core.decode_sequence_example(data)
        context = features
        out.extend(("context", n, v, None) for n, v in context.items())
        for name, steps in lists.items():
            out.append(("feature_list", name, _concat(steps), len(steps)))
    elif kind == "ExampleListWithContext":
        examples, context = decode_elwc(data)
        out.extend(("context", n, v, None) for n, v in context.items())
        names = dict.fromkeys(n for ex in examples for n in ex)
        for name in names:
            values = [ex[name] for ex in examples if name in ex]
            out.append(("examples", name, _concat(values), len(values)))
    return out


def _concat(values: Sequence[Any]) -> Any:
    if not values:
        return np.zeros(0, np.float32)
    if all(isinstance(v, list) for v in values):
        return [b for v in values for b in v]
    arrays = [v for v in values if isinstance(v, np.ndarray) and len(v)]
    return np.concatenate(arrays) if arrays else np.zeros(0, np.float32)


_DIGITS = re.compile(r"(\d+)")


def natural_key(key: tuple[str, str]) -> tuple[Any, ...]:
    """Sort key: part, then name with its numbers compared as numbers (feature_2 < _10)."""
    parts = _DIGITS.split(key[1])
    return (key[0], *[(int(p), "") if i % 2 else (0, p) for i, p in enumerate(parts)])
