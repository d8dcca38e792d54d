"""TensorFlow interop both ways, on random Examples and SequenceExamples.

A: TensorFlow writes (``tf.io.TFRecordWriter``, plain / GZIP / ZLIB); recordforge reads
   and decodes, and gets what TensorFlow's own parse gets, field by field.
B: recordforge encodes and writes; TensorFlow reads (``TFRecordDataset``,
   ``Example.FromString``, ``tf.io.parse_example``) and gets the input values.
And the compressed streams are byte for byte the ones TensorFlow writes.

A feature is modelled as ``(kind, values)``, ``kind`` one of ``KINDS`` or ``None`` (a
Feature with no kind, which only TensorFlow writes; recordforge decodes it as an empty
float32 array).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import recordforge as rf

Model = tuple[str | None, list[Any]]
Features = dict[str, Model]
FeatureLists = dict[str, list[Model]]

COMPRESSIONS = [None, "gzip", "zlib"]
TF_OPTIONS = {None: "", "gzip": "GZIP", "zlib": "ZLIB"}
KINDS = ("int64_list", "float_list", "bytes_list")
TF_LISTS = {
    "int64_list": tf.train.Int64List,
    "float_list": tf.train.FloatList,
    "bytes_list": tf.train.BytesList,
}
TF_DTYPES = {"int64_list": tf.int64, "float_list": tf.float32, "bytes_list": tf.string}
NP_DTYPES = {"int64_list": np.int64, "float_list": np.float32, "bytes_list": np.bytes_}
KIND_OF_DTYPE = {np.dtype(np.int64): "int64_list", np.dtype(np.float32): "float_list"}
DECODED_KINDLESS: Model = ("float_list", [])
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
NAN_BITS = 0x7FC00000

SETTINGS = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

KEYS = st.text(max_size=8)  # unicode, NUL and the empty key included
INT64_VALUES = st.lists(
    st.one_of(st.sampled_from([INT64_MIN, INT64_MAX]), st.integers(INT64_MIN, INT64_MAX)),
    max_size=8,
)
FLOAT_VALUES = st.lists(st.floats(width=32), max_size=8)  # NaN, +-inf, -0.0, subnormals
BYTES_VALUES = st.lists(st.binary(max_size=24), max_size=5)  # NULs, trailing NULs, b""
TYPED = st.one_of(
    st.tuples(st.just(kind), values)
    for kind, values in zip(KINDS, (INT64_VALUES, FLOAT_VALUES, BYTES_VALUES), strict=True)
)
ANY_KIND = st.one_of(TYPED, st.just((None, [])))


def feature_maps(feature: st.SearchStrategy[Model]) -> st.SearchStrategy[Features]:
    return st.dictionaries(KEYS, feature, max_size=6)


def sequence_examples(
    feature: st.SearchStrategy[Model],
) -> st.SearchStrategy[tuple[Features, FeatureLists]]:
    return st.tuples(
        feature_maps(feature), st.dictionaries(KEYS, st.lists(feature, max_size=4), max_size=4)
    )


EXTREMES: Features = {
    "int64": ("int64_list", [INT64_MIN, INT64_MAX, 0, -1, 1]),
    "float": ("float_list", [math.nan, math.inf, -math.inf, -0.0, 0.0, 1e-45, 3.4028234e38]),
    "bytes": ("bytes_list", [b"", b"\x00", b"a\x00\x00", bytes(range(256))]),
    "": ("int64_list", [7]),
    "ключ 🔑\x00": ("float_list", [1.5]),
    "empty int64": ("int64_list", []),
    "empty float": ("float_list", []),
    "empty bytes": ("bytes_list", []),
}
WITH_KINDLESS: Features = {**EXTREMES, "no kind": (None, [])}


def canonical(kind: str | None, values: Any) -> Model:
    """Comparable form: float32 values as bit patterns (-0.0 != 0.0), every NaN alike."""
    if kind == "float_list":
        floats = np.asarray(values, dtype=np.float32)
        return kind, np.where(np.isnan(floats), NAN_BITS, floats.view(np.uint32)).tolist()
    return kind, list(values)


def tf_feature(kind: str | None, values: list[Any]) -> tf.train.Feature:
    if kind is None:
        return tf.train.Feature()
    return tf.train.Feature(**{kind: TF_LISTS[kind](value=values)})


def tf_features(features: Features) -> tf.train.Features:
    return tf.train.Features(feature={key: tf_feature(*m) for key, m in features.items()})


def tf_sequence_example(context: Features, lists: FeatureLists) -> tf.train.SequenceExample:
    feature_lists = {
        key: tf.train.FeatureList(feature=[tf_feature(*m) for m in steps])
        for key, steps in lists.items()
    }
    return tf.train.SequenceExample(
        context=tf_features(context),
        feature_lists=tf.train.FeatureLists(feature_list=feature_lists),
    )


def rf_input(model: Model) -> Any:
    kind, values = model
    if kind == "bytes_list" and values:
        return list(values)  # not np.bytes_: NumPy drops trailing NULs
    return np.array(values, dtype=NP_DTYPES[kind])


def tf_view(feature: tf.train.Feature) -> Model:
    kind = feature.WhichOneof("kind")
    return canonical(kind, getattr(feature, kind).value if kind else [])


def tf_view_as_decoded(feature: tf.train.Feature) -> Model:
    """What recordforge should decode ``feature`` to."""
    return tf_view(feature) if feature.WhichOneof("kind") else DECODED_KINDLESS


def rf_view(value: Any) -> Model:
    if isinstance(value, list):
        return canonical("bytes_list", value)
    return canonical(KIND_OF_DTYPE[value.dtype], value)


def model_view(model: Model) -> Model:
    return canonical(*model)


def views(mapping: Mapping[str, Any], view: Callable[[Any], Any]) -> dict[str, Any]:
    return {key: view(value) for key, value in mapping.items()}


def list_views(mapping: Mapping[str, Any], view: Callable[[Any], Any]) -> dict[str, Any]:
    return {key: [view(v) for v in values] for key, values in mapping.items()}


def tf_lists(sequence_example: tf.train.SequenceExample) -> dict[str, Any]:
    return {key: fl.feature for key, fl in sequence_example.feature_lists.feature_list.items()}


def write_with_tf(path: Path, records: list[bytes], compression: str | None) -> Path:
    with tf.io.TFRecordWriter(str(path), options=TF_OPTIONS[compression]) as w:
        for record in records:
            w.write(record)
    return path


def write_with_rf(path: Path, records: list[bytes], compression: str | None) -> Path:
    with rf.TFRecordWriter(path, compression=compression) as w:
        w.write_many(records)
    return path


def read_with_tf(path: Path, compression: str | None) -> list[bytes]:
    dataset = tf.data.TFRecordDataset(str(path), compression_type=TF_OPTIONS[compression])
    return [record.numpy() for record in dataset]


def read_with_rf(path: Path, compression: str | None) -> list[bytes]:
    records = list(rf.read_records(path))  # compression detected
    assert list(rf.read_records(path, compression=compression)) == records
    return records


def parse_with_tf(record: bytes, features: Features) -> dict[str, Model]:
    """``tf.io.parse_example`` with a VarLenFeature of each feature's dtype."""
    spec = {key: tf.io.VarLenFeature(TF_DTYPES[kind]) for key, (kind, _) in features.items()}
    parsed = tf.io.parse_example(tf.constant([record]), spec) if spec else {}
    return {key: canonical(kind, parsed[key].values.numpy()) for key, (kind, _) in features.items()}


def check_tf_to_rf(tmp_path: Path, compression: str | None, examples: list[Features]) -> None:
    records = [tf.train.Example(features=tf_features(f)).SerializeToString() for f in examples]
    path = write_with_tf(tmp_path / "tf.tfrecord", records, compression)
    assert read_with_rf(path, compression) == records
    for record in records:
        expected = views(tf.train.Example.FromString(record).features.feature, tf_view_as_decoded)
        assert views(rf.decode_example(record), rf_view) == expected


def check_rf_to_tf(tmp_path: Path, compression: str | None, examples: list[Features]) -> None:
    records = [rf.encode_example(views(f, rf_input)) for f in examples]
    path = write_with_rf(tmp_path / "rf.tfrecord", records, compression)
    assert read_with_tf(path, compression) == records
    for record, features in zip(records, examples, strict=True):
        expected = views(features, model_view)
        assert views(tf.train.Example.FromString(record).features.feature, tf_view) == expected
        assert parse_with_tf(record, features) == expected


@pytest.mark.parametrize("compression", COMPRESSIONS)
@SETTINGS
@given(examples=st.lists(feature_maps(ANY_KIND), min_size=1, max_size=3))
@example(examples=[WITH_KINDLESS, {}])
def test_tf_examples_read_by_recordforge(
    tmp_path: Path, compression: str | None, examples: list[Features]
) -> None:
    check_tf_to_rf(tmp_path, compression, examples)


@pytest.mark.parametrize("compression", COMPRESSIONS)
@SETTINGS
@given(examples=st.lists(feature_maps(TYPED), min_size=1, max_size=3))
@example(examples=[EXTREMES, {}])
def test_recordforge_examples_read_by_tf(
    tmp_path: Path, compression: str | None, examples: list[Features]
) -> None:
    check_rf_to_tf(tmp_path, compression, examples)


@pytest.mark.parametrize("compression", COMPRESSIONS)
@SETTINGS
@given(sequences=st.lists(sequence_examples(ANY_KIND), min_size=1, max_size=3))
@example(sequences=[(WITH_KINDLESS, {"steps": list(WITH_KINDLESS.values()), "none": []})])
def test_tf_sequence_examples_read_by_recordforge(
    tmp_path: Path, compression: str | None, sequences: list[tuple[Features, FeatureLists]]
) -> None:
    records = [tf_sequence_example(*s).SerializeToString() for s in sequences]
    path = write_with_tf(tmp_path / "tf.tfrecord", records, compression)
    assert read_with_rf(path, compression) == records
    for record in records:
        parsed = tf.train.SequenceExample.FromString(record)
        context, lists = rf.decode_sequence_example(record)
        assert views(context, rf_view) == views(parsed.context.feature, tf_view_as_decoded)
        assert list_views(lists, rf_view) == list_views(tf_lists(parsed), tf_view_as_decoded)


@pytest.mark.parametrize("compression", COMPRESSIONS)
@SETTINGS
@given(sequences=st.lists(sequence_examples(TYPED), min_size=1, max_size=3))
@example(sequences=[(EXTREMES, {"steps": list(EXTREMES.values()), "none": []})])
def test_recordforge_sequence_examples_read_by_tf(
    tmp_path: Path, compression: str | None, sequences: list[tuple[Features, FeatureLists]]
) -> None:
    records = [
        rf.encode_sequence_example(views(context, rf_input), list_views(lists, rf_input))
        for context, lists in sequences
    ]
    path = write_with_rf(tmp_path / "rf.tfrecord", records, compression)
    assert read_with_tf(path, compression) == records
    for record, (context, lists) in zip(records, sequences, strict=True):
        parsed = tf.train.SequenceExample.FromString(record)
        assert views(parsed.context.feature, tf_view) == views(context, model_view)
        assert list_views(tf_lists(parsed), tf_view) == list_views(lists, model_view)


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_values_over_1mb_both_ways(tmp_path: Path, compression: str | None) -> None:
    rng = np.random.default_rng(1)
    features: Features = {
        "bytes": ("bytes_list", [rng.bytes(1_500_000), b"\x00" * 1_100_000, b""]),
        "floats": ("float_list", rng.standard_normal(300_000).astype(np.float32).tolist()),
        "ints": ("int64_list", rng.integers(INT64_MIN, INT64_MAX, 300_000).tolist()),
    }
    check_tf_to_rf(tmp_path, compression, [features])
    check_rf_to_tf(tmp_path, compression, [features])


def test_thousands_of_features_both_ways(tmp_path: Path) -> None:
    features: Features = {}
    for i in range(1_500):
        kind = KINDS[i % 3]
        values = {"int64_list": [i, -i], "float_list": [i / 7], "bytes_list": [str(i).encode()]}
        features[f"feature/{i}"] = (kind, values[kind])
    for compression in COMPRESSIONS:
        check_tf_to_rf(tmp_path, compression, [features, {}])
        check_rf_to_tf(tmp_path, compression, [features, {}])


def deflate_like_tf(data: bytes, wbits: int) -> bytes:
    """zlib set as TensorFlow's ZlibCompressionOptions: level 6, memLevel 9.

    ``zlib.compress`` (memLevel 8) gives the same bytes only for small streams.
    """
    compressor = zlib.compressobj(6, zlib.DEFLATED, wbits, 9)
    return compressor.compress(data) + compressor.flush()


def assert_streams_are_tfs(tmp_path: Path, records: list[bytes]) -> None:
    plain = write_with_tf(tmp_path / "tf.plain", records, None).read_bytes()
    assert write_with_rf(tmp_path / "rf.plain", records, None).read_bytes() == plain
    for compression, wbits in (("gzip", 31), ("zlib", 15)):
        theirs = write_with_tf(tmp_path / f"tf.{compression}", records, compression).read_bytes()
        assert theirs == deflate_like_tf(plain, wbits)
        ours = write_with_rf(tmp_path / f"rf.{compression}", records, compression).read_bytes()
        assert ours == theirs, f"{compression}: recordforge's stream differs from TensorFlow's"


@SETTINGS
@given(records=st.lists(st.binary(max_size=2_000), max_size=4))
def test_compressed_streams_are_tfs(tmp_path: Path, records: list[bytes]) -> None:
    assert_streams_are_tfs(tmp_path, records)
    if len(b"".join(records)) < 8_000:  # far below zlib's memLevel-dependent block sizes
        plain = (tmp_path / "tf.plain").read_bytes()
        assert (tmp_path / "tf.zlib").read_bytes() == zlib.compress(plain)


def large_records(kind: str) -> list[bytes]:
    rng = np.random.default_rng(2)
    if kind == "random 17 KB":  # just past zlib's 16 K-symbol block at memLevel 8
        return [rng.bytes(17_000)]
    if kind == "low entropy 3 MB":  # more than TensorFlow's 256 KiB zlib buffers
        return [rng.integers(0, 16, size=n, dtype=np.uint8).tobytes() for n in (1, 3_000_000)]
    return [rng.bytes(1_000_000)]  # incompressible: stored blocks


@pytest.mark.parametrize("kind", ["random 17 KB", "low entropy 3 MB", "random 1 MB"])
def test_large_compressed_streams_are_tfs(tmp_path: Path, kind: str) -> None:
    assert_streams_are_tfs(tmp_path, large_records(kind))
