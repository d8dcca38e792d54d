"""Example / SequenceExample codec: value mapping, errors, protobuf parsing rules."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from helpers import assert_value_equal

import recordforge as rf

# (value, expected decoded value)
ENCODE_TABLE: list[tuple[Any, Any]] = [
    (7, np.array([7], np.int64)),
    (True, np.array([1], np.int64)),
    (-(2**63), np.array([-(2**63)], np.int64)),
    (2**63 - 1, np.array([2**63 - 1], np.int64)),
    (0.5, np.array([0.5], np.float32)),
    ("héllo", [b"h\xc3\xa9llo"]),
    (b"\x00\x01", [b"\x00\x01"]),
    (bytearray(b"ab"), [b"ab"]),
    ([1, 2, 3], np.array([1, 2, 3], np.int64)),
    ((1, 2.5), np.array([1.0, 2.5], np.float32)),
    ([True, False], np.array([1, 0], np.int64)),
    (["a", b"b"], [b"a", b"b"]),
    (np.arange(6, dtype=np.int32).reshape(2, 3), np.arange(6, dtype=np.int64)),
    (np.array([1, 0], np.bool_), np.array([1, 0], np.int64)),
    (np.array([2**63 - 1], np.uint64), np.array([2**63 - 1], np.int64)),
    (np.array([[1.5], [2.5]], np.float64), np.array([1.5, 2.5], np.float32)),
    (np.array([1.5], np.float16), np.array([1.5], np.float32)),
    (np.array([b"x", b"yz"]), [b"x", b"yz"]),
    (np.array(["é", "b"]), [b"\xc3\xa9", b"b"]),
    (np.array([b"a", "b"], dtype=object), [b"a", b"b"]),
    (np.int64(5), np.array([5], np.int64)),
    (np.float32(0.25), np.array([0.25], np.float32)),
    (np.array(3), np.array([3], np.int64)),
    (np.array([], np.int64), np.array([], np.int64)),
    (np.array([], np.float32), np.array([], np.float32)),
    (np.array([], np.bytes_), []),
]


@pytest.mark.parametrize(
    ("value", "expected"), ENCODE_TABLE, ids=[repr(v)[:40] for v, _ in ENCODE_TABLE]
)
def test_value_mapping(value: Any, expected: Any) -> None:
    decoded = rf.decode_example(rf.encode_example({"f": value}))
    assert list(decoded) == ["f"]
    assert_value_equal(decoded["f"], expected)


ERROR_TABLE: list[tuple[Any, str]] = [
    ([], "empty list has no kind"),
    ((), "empty list has no kind"),
    (None, "None has no kind"),
    ([1, "a"], "mixes numbers with str/bytes"),
    ([[1], [2]], "unsupported list element of type list"),
    (2**63, "does not fit in int64"),
    ([1, 2**64], "does not fit in int64"),
    (np.array([2**64 - 1], np.uint64), "does not fit in int64"),
    (np.array([1 + 2j]), "unsupported NumPy dtype"),
    (object(), "unsupported value of type object"),
    ({"a": 1}, "unsupported value of type dict"),
]


@pytest.mark.parametrize(("value", "message"), ERROR_TABLE, ids=[m for _, m in ERROR_TABLE])
def test_unsupported_values_name_the_feature(value: Any, message: str) -> None:
    with pytest.raises(rf.EncodeError, match=message) as info:
        rf.encode_example({"the_feature": value})
    assert '"the_feature"' in str(info.value)
    assert isinstance(info.value, TypeError) and isinstance(info.value, rf.RecordforgeError)


def test_feature_names_must_be_str() -> None:
    with pytest.raises(rf.EncodeError, match="names must be str"):
        rf.encode_example({1: 2})
    with pytest.raises(rf.EncodeError, match="mapping"):
        rf.encode_example([("a", 1)])


def test_order_unicode_and_empty_names() -> None:
    mapping = {"z": 1, "": b"empty name", "名前": "値", "a": [0.5]}
    decoded = rf.decode_example(rf.encode_example(mapping))
    assert list(decoded) == list(mapping)
    assert decoded[""] == [b"empty name"] and decoded["名前"] == ["値".encode()]


def test_kindless_feature_decodes_to_empty_float32() -> None:
    # Example{features{feature{key:"k" value:Feature{}}}}
    data = bytes([0x0A, 0x07, 0x0A, 0x05, 0x0A, 0x01, ord("k"), 0x12, 0x00])
    assert_value_equal(rf.decode_example(data)["k"], np.array([], np.float32))


def _entry(key: bytes, feature: bytes) -> bytes:
    entry = bytes([0x0A, len(key)]) + key + bytes([0x12, len(feature)]) + feature
    return bytes([0x0A, len(entry)]) + entry


def _example(*entries: bytes) -> bytes:
    body = b"".join(entries)
    return bytes([0x0A, len(body)]) + body


def test_protobuf_rules_packed_unpacked_duplicates_unknown_fields() -> None:
    unpacked_ints = bytes([0x1A, 0x06, 0x08, 0x01, 0x08, 0x02, 0x08, 0x03])  # int64 1,2,3
    unpacked_floats = bytes([0x12, 0x05, 0x0D]) + np.float32(2.0).tobytes()
    data = _example(_entry(b"i", unpacked_ints), _entry(b"f", unpacked_floats))
    decoded = rf.decode_example(data)
    assert_value_equal(decoded["i"], np.array([1, 2, 3], np.int64))
    assert_value_equal(decoded["f"], np.array([2.0], np.float32))
    # A duplicated key keeps the last entry; unknown fields (field 9 varint) are skipped.
    data = _example(_entry(b"k", unpacked_ints), _entry(b"k", unpacked_floats)) + b"\x48\x01"
    assert_value_equal(rf.decode_example(data)["k"], np.array([2.0], np.float32))
    # Two `features` fields merge, as protobuf merges repeated sub-messages.
    data = _example(_entry(b"a", unpacked_ints)) + _example(_entry(b"b", unpacked_floats))
    assert sorted(rf.decode_example(data)) == ["a", "b"]


DECODE_ERRORS = [
    (b"\x0a\x05\x0a", "length runs past the end"),
    (b"\x0a", "varint runs past the end"),
    (b"\x00\x00", "invalid field number"),
    (b"\x0f", "invalid wire type"),
    (b"\x0c", "unexpected end-group tag"),
    (b"\x0a" + b"\xff" * 10 + b"\x01", "varint"),
    (_example(_entry(b"f", bytes([0x12, 0x03, 0x0A, 0x01, 0x00]))), "not a multiple of 4"),
    (_example(_entry(b"\xff", bytes([0x1A, 0x00]))), "not valid UTF-8"),
]


@pytest.mark.parametrize(("data", "message"), DECODE_ERRORS, ids=[m for _, m in DECODE_ERRORS])
def test_malformed_bytes_raise_decode_error(data: bytes, message: str) -> None:
    with pytest.raises(rf.DecodeError, match=message):
        rf.decode_example(data)
    # The same bytes as a SequenceExample's context (field 1 is `Features` there too).
    with pytest.raises(rf.DecodeError, match=message):
        rf.decode_sequence_example(data)


def test_sequence_example_roundtrip_and_errors() -> None:
    context = {"id": 3, "name": "x"}
    lists = {
        "tokens": [[b"a"], np.array([], np.bytes_), [b"b", b"c"]],
        "scores": [np.array([0.5, 1.5]), [2.0]],
        "empty": [],
    }
    ctx, fl = rf.decode_sequence_example(rf.encode_sequence_example(context, lists))
    assert ctx["id"].tolist() == [3] and ctx["name"] == [b"x"]
    assert fl["tokens"] == [[b"a"], [], [b"b", b"c"]]
    assert [s.tolist() for s in fl["scores"]] == [[0.5, 1.5], [2.0]]
    assert fl["empty"] == []
    with pytest.raises(rf.EncodeError, match=r'"tokens\[1\]"'):
        rf.encode_sequence_example({}, {"tokens": [[b"a"], []]})
    with pytest.raises(rf.EncodeError, match="sequence of steps"):
        rf.encode_sequence_example({}, {"tokens": 5})


def test_large_and_many_features() -> None:
    big = np.random.default_rng(0).random(300_000, dtype=np.float32)
    many = {f"f{i}": i for i in range(2000)}
    decoded = rf.decode_example(rf.encode_example({"big": big, **many}))
    np.testing.assert_array_equal(decoded["big"], big)
    assert len(decoded) == 2001 and decoded["f1999"].tolist() == [1999]


def test_encode_columns_equals_row_by_row_encoding() -> None:
    rng = np.random.default_rng(0)
    n = 200
    lengths = rng.integers(0, 4, n)
    splits = np.concatenate([[0], np.cumsum(lengths)])
    words = [f"w{i}" for i in range(int(splits[-1]))]
    columns = {
        "id": np.arange(n),
        "score": rng.random(n),
        "box": rng.random((n, 4)).astype(np.float32),
        "flag": rng.integers(0, 2, n).astype(bool),
        "name": [f"name {i}" for i in range(n)],
        "raw": np.array([b"x" * (i % 5) for i in range(n)], dtype=object),
        "words": (words, splits),
        "ragged": (rng.integers(-5, 5, int(splits[-1])), splits),
    }
    rows = rf.encode_columns(columns)
    assert len(rows) == n
    for i in [0, 1, 57, n - 1]:
        start, end = splits[i], splits[i + 1]
        expected = {
            "id": int(columns["id"][i]),
            "score": float(columns["score"][i]),
            "box": columns["box"][i],
            "flag": bool(columns["flag"][i]),
            "name": columns["name"][i],
            "raw": columns["raw"][i],
            "words": np.array(words[start:end], dtype=np.bytes_),
            "ragged": columns["ragged"][0][start:end],
        }
        assert rows[i] == rf.encode_example(expected)


def test_encode_columns_errors() -> None:
    with pytest.raises(rf.EncodeError, match='column "b" has 2 rows, others have 3'):
        rf.encode_columns({"a": np.arange(3), "b": np.arange(2)})
    with pytest.raises(rf.EncodeError, match="row 1: expected str or bytes"):
        rf.encode_columns({"a": ["x", 1]})
    with pytest.raises(ValueError, match="row splits"):
        rf.encode_columns({"a": (np.arange(3), np.array([0, 2, 1]))})
