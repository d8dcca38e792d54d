"""Schema: validation, JSON round trip, TensorFlow feature description, inference."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import recordforge as rf

SPECS = {
    "id": rf.FeatureSpec(dtype="int64"),
    "bbox": rf.FeatureSpec(dtype="float32", shape=(4,), meaning=rf.BBox(layout="xywh")),
    "label": rf.FeatureSpec(
        dtype="int64", shape=(None,), meaning=rf.ClassLabel(names=("a", "b"), ids=(1, 5))
    ),
    "image": rf.FeatureSpec(dtype="bytes", meaning=rf.Image(format="jpeg")),
    "caption": rf.FeatureSpec(dtype="string", shape=(None,), meaning=rf.Text()),
    "polygon": rf.FeatureSpec(dtype="float32", shape=(None, None)),
}


def test_json_round_trip_through_text() -> None:
    schema = rf.Schema(SPECS)
    text = json.dumps(schema.to_json())
    assert rf.Schema.from_json(json.loads(text)) == schema
    assert json.loads(text)["format_version"] == 1


INVALID = [
    ({"dtype": "int32"}, "unknown dtype"),
    ({"dtype": "int64", "shape": (-1,)}, "ints >= 0 or None"),
    ({"dtype": "int64", "shape": (3, None)}, "only leading dimensions"),
    ({"dtype": "int64", "shape": (None, None, None)}, "one ragged level"),
]


@pytest.mark.parametrize(("kwargs", "message"), INVALID, ids=[m for _, m in INVALID])
def test_invalid_specs_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(rf.SchemaError, match=message):
        rf.FeatureSpec(**kwargs)  # type: ignore[arg-type]


def test_invalid_json_is_refused() -> None:
    with pytest.raises(rf.SchemaError, match="format_version"):
        rf.Schema.from_json({"format_version": 99, "features": {}})
    with pytest.raises(rf.SchemaError, match="unknown meaning"):
        rf.FeatureSpec.from_json({"dtype": "int64", "meaning": {"type": "sound"}})
    with pytest.raises(rf.SchemaError, match="has no 'dtype'"):
        rf.FeatureSpec.from_json({"shape": []})
    with pytest.raises(rf.SchemaError, match="2 ids for 1 names"):
        rf.ClassLabel(names=("a",), ids=(1, 2))


def test_class_label_names() -> None:
    label = SPECS["label"].meaning
    assert isinstance(label, rf.ClassLabel)
    assert label.name_of(5) == "b"
    assert rf.ClassLabel(names=("x", "y")).name_of(1) == "y"


def test_tf_feature_description_parses_our_records() -> None:
    schema = rf.Schema(SPECS)
    rows = [
        {
            "id": 1,
            "bbox": [1.0, 2.0, 3.0, 4.0],
            "label": [1, 5, 5],
            "image": b"\xff\xd8jpeg",
            "caption": ["a cat", "un chat"],
            "polygon": [1.0, 2.0, 3.0, 4.0, 5.0],
            "polygon/row_lengths": [2, 3],
        },
        {
            "id": 2,
            "bbox": np.zeros(4),
            "label": np.array([], np.int64),
            "image": b"",
            "caption": np.array([], np.bytes_),
            "polygon": np.array([], np.float32),
            "polygon/row_lengths": np.array([], np.int64),
        },
    ]
    serialized = [rf.encode_example(r) for r in rows]
    parsed = tf.io.parse_example(serialized, schema.to_tf_feature_description())
    assert parsed["id"].numpy().tolist() == [1, 2]
    assert parsed["bbox"].numpy().tolist() == [[1, 2, 3, 4], [0, 0, 0, 0]]
    assert tf.sparse.to_dense(parsed["label"]).numpy().tolist() == [[1, 5, 5], [0, 0, 0]]
    assert parsed["caption"].values.numpy().tolist() == [b"a cat", b"un chat"]
    assert parsed["polygon"].to_list() == [[[1.0, 2.0], [3.0, 4.0, 5.0]], []]


def test_infer_schema_from_foreign_records(shared_data: Path) -> None:
    path = shared_data / "tfrecord_vectors" / "pytorch_data" / "example.tfrecord"
    schema = rf.infer_schema(rf.decode_example(r) for r in rf.read_records(path))
    assert dict(schema) == {
        "x_byte": rf.FeatureSpec(dtype="bytes"),
        "x_float": rf.FeatureSpec(dtype="float32", shape=(10,)),
        "x_int": rf.FeatureSpec(dtype="int64", shape=(10,)),
    }


def test_infer_schema_kinds_lengths_and_conflicts() -> None:
    examples = [
        {"n": np.array([1, 2]), "maybe": np.array([], np.float32), "s": [b"x"]},
        {"n": np.array([3]), "s": [b"y"]},
    ]
    schema = rf.infer_schema(examples)
    assert schema["n"] == rf.FeatureSpec(dtype="int64", shape=(None,))
    assert schema["maybe"] == rf.FeatureSpec(dtype="float32", shape=(None,))
    assert schema["s"] == rf.FeatureSpec(dtype="bytes")
    with pytest.raises(rf.SchemaError, match="int64 in one record, bytes in another"):
        rf.infer_schema([{"a": np.array([1])}, {"a": [b"x"]}])
