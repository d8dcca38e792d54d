"""Records that protobuf and TensorFlow's parser read differently (issue 13): the columnar
decoder (``Dataset.batches``, ``ds[i]``, ``take``, ``rf.decode_batch``) gives what
``tf.io.parse_example`` gives for the schema's feature description — the same values, or
an error where TensorFlow has one — for hand-made wire bytes: a key given twice with two
kinds, a Feature with two oneof members, map entries with a missing or extra field,
stray fields inside value lists, keys that are not UTF-8.

(``rf.decode_example`` keeps protobuf's rules, those of ``tf.train.Example.FromString``:
a oneof takes its last member, a repeated Feature merges.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import entry, example, ld, tag, varint

import recordforge as rf

tf = pytest.importorskip("tensorflow")


def i64(*v: int) -> bytes:
    return ld(3, ld(1, b"".join(varint(x & (2**64 - 1)) for x in v)))


def f32(*v: float) -> bytes:
    return ld(2, ld(1, np.array(v, np.float32).tobytes()))


def byt(*v: bytes) -> bytes:
    return ld(1, b"".join(ld(1, x) for x in v))


RECORDS: dict[str, bytes] = {
    "plain int": example(entry(b"x", i64(7, 8))),
    "oneof: bytes then int64": example(entry(b"x", byt(b"a") + i64(7))),
    "oneof: int64 then float": example(entry(b"x", i64(3) + f32(1.5))),
    "oneof: int64 twice": example(entry(b"x", i64(3) + i64(4, 5))),
    "oneof: empty bytes then int64": example(entry(b"x", ld(1, b"") + i64(7))),
    "oneof: float then bytes": example(entry(b"x", f32(0.5, 2.0) + byt(b"q"))),
    "feature: unknown field first": example(entry(b"x", tag(4, 0) + b"\x01" + i64(7))),
    "feature: unknown field after": example(entry(b"x", i64(7, 9) + tag(4, 0) + b"\x01")),
    "feature: no kind": example(entry(b"x", b"")),
    "key twice: bytes then int64": example(entry(b"x", byt(b"a")), entry(b"x", i64(7))),
    "key twice: int64 then bytes": example(entry(b"x", i64(7)), entry(b"x", byt(b"a"))),
    "key twice: float then int64": example(entry(b"x", f32(1.0)), entry(b"x", i64(7, 8))),
    "key twice: int64 then no kind": example(entry(b"x", i64(7)), entry(b"x", b"")),
    "key twice: garbage then int64": example(entry(b"x", b"\x7f\x01"), entry(b"x", i64(4, 2))),
    "key twice, in two Features": example(entry(b"x", i64(1))) + example(entry(b"x", i64(2))),
    "entry: value before key": example(ld(1, ld(2, i64(5)) + ld(1, b"x"))),
    "entry: Feature twice": example(ld(1, ld(1, b"x") + ld(2, i64(1)) + ld(2, i64(2)))),
    "entry: key twice": example(ld(1, ld(1, b"y") + ld(1, b"x") + ld(2, i64(2)))),
    "entry: no value": example(ld(1, ld(1, b"x"))),
    "entry: extra field": example(ld(1, ld(1, b"x") + ld(2, i64(2)) + tag(3, 0) + b"\x00")),
    "Features: a stray field": example(tag(2, 0) + b"\x01" + entry(b"x", i64(1))),
    "Example: an unknown field": tag(5, 0) + b"\x01" + example(entry(b"x", i64(1))),
    "int64: unpacked": example(entry(b"x", ld(3, tag(1, 0) + b"\x03" + tag(1, 0) + b"\x04"))),
    "int64: packed and unpacked": example(entry(b"x", ld(3, ld(1, b"\x01\x02") + b"\x08\x03"))),
    "int64: a stray field": example(entry(b"x", ld(3, tag(2, 0) + b"\x03" + ld(1, b"\x04")))),
    "int64: packed twice": example(entry(b"x", ld(3, ld(1, b"\x01\x02") + ld(1, b"\x03")))),
    "int64: unpacked then packed": example(entry(b"x", ld(3, b"\x08\x03" + ld(1, b"\x01")))),
    "int64: empty packed, then more": example(entry(b"x", ld(3, ld(1, b"") + b"\x08\x03"))),
    "int64: packed, then a stray field": example(
        entry(b"x", ld(3, ld(1, b"\x01\x02") + b"\x10\x03"))
    ),
    "float: unpacked": example(entry(b"x", ld(2, tag(1, 5) + b"\0\0\xc0\x3f" * 2))),
    "float: packed, then unpacked": example(
        entry(b"x", ld(2, ld(1, b"\0\0\x80\x3f" * 2) + b"\x0d" + b"\0\0\0\x40"))
    ),
    "float: unpacked, then packed": example(
        entry(b"x", ld(2, b"\x0d" + b"\0\0\0\x40" + ld(1, b"\0\0\x80\x3f")))
    ),
    "key twice: int64 pair then no kind": example(entry(b"x", i64(7, 8)), entry(b"x", b"")),
    "key twice: no kind then int64 pair": example(entry(b"x", b""), entry(b"x", i64(7, 8))),
    "key twice: int64 pair then garbage": example(entry(b"x", i64(7, 8)), entry(b"x", b"\x7f")),
    "bytes: a stray field": example(entry(b"x", ld(1, tag(2, 0) + b"\x01" + ld(1, b"q")))),
    "another key not UTF-8": example(entry(b"\xff\xfe", i64(1)), entry(b"x", i64(2, 3))),
    "another key, Feature garbage": example(entry(b"y", b"\xff\xff"), entry(b"x", i64(2, 3))),
    "missing": example(entry(b"y", i64(1))),
}

KINDS = {"int64": "int64", "float32": "float32", "bytes": "bytes"}


def tf_parse(record: bytes, dtype: str, shape: tuple[int | None, ...]) -> Any:
    """What tf.io.parse_example gives for feature ``x``: a list of values, or None for an
    error."""
    tf_dtype = {"int64": tf.int64, "float32": tf.float32, "bytes": tf.string}[dtype]
    spec = (
        tf.io.VarLenFeature(tf_dtype)
        if shape == (None,)
        else tf.io.FixedLenFeature(list(shape), tf_dtype)
    )
    try:
        got = tf.io.parse_example(tf.constant([record]), {"x": spec})["x"]
    except (tf.errors.InvalidArgumentError, ValueError):
        return None
    values = got.values if shape == (None,) else tf.reshape(got, [-1])
    return [v if isinstance(v, bytes) else float(v) for v in values.numpy().tolist()]


def ours(value: Any) -> list[Any]:
    flat = value.values if isinstance(value, rf.Ragged) else np.asarray(value).reshape(-1)
    return [v if isinstance(v, bytes) else float(v) for v in np.asarray(flat).tolist()]


def decoded(record: bytes, dtype: str, shape: tuple[int | None, ...], path: Path) -> dict:
    """Feature ``x`` of ``record`` by each columnar path: values, or None for an error."""
    with rf.TFRecordWriter(path) as w:
        w.write(record)
    ds = rf.open_dataset(path, schema=rf.Schema({"x": rf.FeatureSpec(dtype=dtype, shape=shape)}))
    width = None if shape == (None,) else int(np.prod(shape))
    ways = {
        "batches": lambda: ours(next(ds.batches(1))["x"]),
        "ds[i]": lambda: ours(ds[0]["x"]),
        "take": lambda: ours(ds.take([0])["x"]),
        "decode_batch": lambda: ours(rf.decode_batch([record], [("x", KINDS[dtype], width)])[0][0]),
    }
    out = {}
    for name, way in ways.items():
        try:
            out[name] = way()
        except (rf.DecodeError, rf.SchemaError):  # not an Example; not the schema's
            out[name] = None
    return out


@pytest.mark.parametrize("name", list(RECORDS))
def test_columns_equal_tensorflows_parse(name: str, tmp_path: Path) -> None:
    record = RECORDS[name]
    for dtype in ("int64", "float32", "bytes"):
        for shape in ((None,), (), (2,)):
            expected = tf_parse(record, dtype, shape)
            got = decoded(record, dtype, shape, tmp_path / "r.tfrecord")
            for way, value in got.items():
                assert value == expected, (
                    f"{name}, {dtype} {shape}, {way}: {value} vs TF {expected}"
                )


def test_the_brief_cases_read_as_tensorflow_reads_them(tmp_path: Path) -> None:
    """The two records of the issue: a key twice with two kinds reads as its last entry
    (as in decode_example); a Feature with two members reads as TensorFlow's parser
    reads it — its first — where protobuf (decode_example) takes the last."""
    twice = RECORDS["key twice: bytes then int64"]
    assert rf.decode_example(twice)["x"].tolist() == [7]
    got = decoded(twice, "int64", (None,), tmp_path / "a.tfrecord")
    assert set(map(tuple, got.values())) == {(7.0,)}
    both = RECORDS["oneof: bytes then int64"]
    assert rf.decode_example(both)["x"].tolist() == [7]
    assert tf_parse(both, "bytes", (None,)) == [b"a"]
    got = decoded(both, "bytes", (None,), tmp_path / "b.tfrecord")
    assert set(map(tuple, got.values())) == {(b"a",)}


# --------------------------------------------------------------------------------------
# verify: records that do not decode are problems when dataset.json gives a schema


def test_verify_fails_on_undecodable_records_of_a_dataset(tmp_path: Path) -> None:
    import json
    import os

    from recordforge.cli.__main__ import main as cli

    d = tmp_path / "ds"
    m = rf.write_dataset([{"tags": np.array([b"a"] * i, np.bytes_)} for i in range(5)], d)
    shard = d / m.splits["train"][0].file
    with rf.TFRecordWriter(shard) as w:  # framing and CRCs intact, records not Examples
        w.write_many([b"\xff\xff\xff" + bytes([i]) for i in range(5)])
    manifest = json.loads((d / "dataset.json").read_text())
    entry = manifest["splits"]["train"]["shards"][0]
    entry["bytes"] = os.path.getsize(shard)
    entry["checksum"] = f"crc32c:{rf._core.file_crc32c(str(shard)):08x}"
    (d / "dataset.json").write_text(json.dumps(manifest))
    for given in (d, shard):
        result = rf.inspect.verify(given)
        assert not result.ok and [p.kind for p in result.problems] == ["parse"] * 5
        assert cli(["verify", str(given)]) == 1
    # Without dataset.json there is no schema to hold them to: their type is reported.
    (d / "dataset.json").unlink()
    assert rf.inspect.verify(shard).files[0].record_type == "unknown"
