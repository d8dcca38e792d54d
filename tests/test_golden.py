"""Golden vectors from other implementations: CRC32C, Beam's framing, files others wrote.

Sources: ``../shared/data/tfrecord_vectors/{EXPECTED.md,beam_vectors.txt}``,
``../shared/data/tfx_chicago_taxi/EXPECTED.md`` and pytorch/data's
``test/_fakedata/_create_fake_data.py:create_tfrecord_files`` (sequence_example.tfrecord).
"""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_value_equal

import recordforge as rf

# RFC 3720 B.4 (also in TensorFlow's and LevelDB's crc32c tests).
CRC32C_VECTORS = [
    (b"\x00" * 32, 0x8A9136AA),
    (b"\xff" * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),
    (bytes(range(31, -1, -1)), 0x113FDB5C),
    (b"123456789", 0xE3069283),
]
# apache/beam sdks/python/apache_beam/io/tfrecordio_test.py
MASKED_CRC32C_VECTORS = [
    (b"\x00" * 32, 0x0FD7FFFA),
    (b"\xff" * 32, 0xF909B029),
    (b"foo", 0xFEBE8A61),
    (b"\x03\x00\x00\x00\x00\x00\x00\x00", 0x0E4999B0),
]
FOO_RECORD = base64.b64decode("AwAAAAAAAACwmUkOZm9vYYq+/g==")
FOO_BAR_RECORD = base64.b64decode("AwAAAAAAAACwmUkOZm9vYYq+/gMAAAAAAAAAsJlJDmJhckYA5cg=")
# vahidk/tfrecord tests/test_writer.py: Example {"key": bytes_list [b"value"]}
VAHIDK_EXAMPLE = b"\n\x12\n\x10\n\x03key\x12\t\n\x07\n\x05value"

# Index lines ('<offset> <16 + len>') of the plain files, from tfrecord_vectors/EXPECTED.md.
INDEX = {
    "datumaro_tf_od_api/test.tfrecord": "0 803",
    "datumaro_tf_od_api/train.tfrecord": "0 1067",
    "datumaro_tf_od_api/val.tfrecord": "0 1022",
    "pytorch_data/example.tfrecord": "0 124; 124 131; 255 134; 389 134",
    "pytorch_data/sequence_example.tfrecord": "0 405; 405 600; 1005 791; 1796 964",
    "tf_ranking/test_numerical_elwc.tfrecord": (
        "0 2236; 2236 3706; 5942 5489; 11431 585; 12016 651; 12667 4272; 16939 1861;"
        " 18800 591; 19391 2397"
    ),
    "tf_ranking/train_elwc.tfrecord": "; ".join(f"{216 * i} 216" for i in range(10)),
}

BOX_FIELDS = ("xmin", "xmax", "ymin", "ymax")
JPEG_SIZE = 631  # every datumaro record holds the same '<631 bytes JPEG>'
TFX_SHARDS = {
    "data_tfrecord-00000-of-00002.gz": (9_988, 5_221_258),
    "data_tfrecord-00001-of-00002.gz": (5_012, 2_619_369),
}
TFX_COLUMNS = 18
TFX_SAMPLE_STEP = 97


def ints(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def datumaro_features(
    number: int,
    size: tuple[int, int],
    boxes: list[tuple[float, float, float, float]],
    labels: list[int],
    texts: list[bytes],
) -> dict[str, object]:
    """Expected features (but 'image/encoded') of datumaro's image ``<number>.jpg``.

    ``boxes`` are (xmin, xmax, ymin, ymax); an image without objects has no object features.
    """
    height, width = size
    features: dict[str, object] = {
        "image/filename": [f"{number}.jpg".encode()],
        "image/format": [b"jpeg"],
        "image/height": ints(height),
        "image/source_id": [str(number).encode()],
        "image/width": ints(width),
    }
    if boxes:
        columns = np.array(boxes, dtype=np.float32).T
        for name, column in zip(BOX_FIELDS, columns, strict=True):
            features[f"image/object/bbox/{name}"] = column
        features["image/object/class/label"] = ints(*labels)
        features["image/object/class/text"] = texts
    return features


DATUMARO = {
    "test": datumaro_features(3, (5, 4), [], [], []),
    "train": datumaro_features(
        1,
        (16, 16),
        [(0.0, 0.25, 0.25, 0.75), (0.0, 0.25, 0.25, 0.5), (0.125, 0.375, 0.25, 0.5)],
        [3, 4, 0],
        [b"label_2", b"label_3", b""],
    ),
    "val": datumaro_features(2, (8, 8), [(0.125, 0.625, 0.25, 0.5)], [4], [b"label_3"]),
}


def pytorch_data_features(i: int) -> dict[str, object]:
    """Record ``i`` as create_tfrecord_files built it: x = tf.range(10 i, 10 i + 10)."""
    x = np.arange(10 * i, 10 * i + 10, dtype=np.int64)
    return {"x_byte": [b"test str"], "x_float": x.astype(np.float32), "x_int": x * 10}


def assert_features_equal(got: dict[str, object], expected: dict[str, object]) -> None:
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        assert_value_equal(got[key], value)


def parse_index(lines: list[str]) -> list[tuple[int, int]]:
    """Index lines '<offset> <size>' (vahidk/tfrecord and DALI format) as pairs."""
    return [(int(offset), int(size)) for offset, size in map(str.split, lines)]


def read_framing(path: Path) -> tuple[list[bytes], list[tuple[int, int]]]:
    """The records of a plain file and their index lines (offset, 16 + len)."""
    records, index = [], []
    it = rf.read_records(path)
    for record in it:
        records.append(record)
        index.append((it.offset, len(record) + 16))
    return records, index


@pytest.mark.parametrize(("data", "crc"), CRC32C_VECTORS)
def test_crc32c_rfc3720(data: bytes, crc: int) -> None:
    assert rf.crc32c(data) == crc


@pytest.mark.parametrize(("data", "crc"), CRC32C_VECTORS)
def test_crc32c_of_buffers_and_combined(data: bytes, crc: int) -> None:
    """The same CRC for every bytes-like form (a uint8 array in C order is read in place;
    a strided or Fortran-ordered one and a memoryview through a copy, in C order), and
    combined from any two parts."""
    from recordforge._core import crc32c_combine

    doubled = np.frombuffer(bytes(b for x in data for b in (x, 0)), np.uint8)
    for form in (bytearray(data), memoryview(data), np.frombuffer(data, np.uint8), doubled[::2]):
        assert rf.crc32c(form) == crc, type(form)
    grid = np.frombuffer(data * 2, np.uint8).reshape(2, -1)  # the values in C order
    fortran = np.asfortranarray(grid)  # the same values, transposed in memory
    assert rf.crc32c(fortran) == rf.crc32c(grid) == rf.crc32c(data * 2)
    for cut in range(len(data) + 1):
        head, tail = rf.crc32c(data[:cut]), rf.crc32c(data[cut:])
        assert crc32c_combine(head, tail, len(data) - cut) == crc, cut


@pytest.mark.parametrize(("data", "crc"), MASKED_CRC32C_VECTORS)
def test_masked_crc32c_beam(data: bytes, crc: int) -> None:
    assert rf.masked_crc32c(data) == crc


@pytest.mark.parametrize(
    ("records", "framed"), [([b"foo"], FOO_RECORD), ([b"foo", b"bar"], FOO_BAR_RECORD)]
)
def test_beam_framed_bytes(tmp_path: Path, records: list[bytes], framed: bytes) -> None:
    path = tmp_path / "beam.tfrecord"
    with rf.TFRecordWriter(path) as w:
        assert w.write_many(records) == [19 * i for i in range(len(records))]
    assert path.read_bytes() == framed
    assert list(rf.read_records(path)) == records


def bump(data: bytes, index: int) -> bytes:
    damaged = bytearray(data)
    damaged[index] = (damaged[index] + 1) % 256
    return bytes(damaged)


@pytest.mark.parametrize(
    ("data", "offset", "reason"),
    [
        (bump(FOO_RECORD, 9), 0, "length CRC mismatch"),
        (bump(FOO_RECORD, 16), 0, "data CRC mismatch"),
        (bump(FOO_BAR_RECORD, 19 + 9), 19, "length CRC mismatch"),
        (bump(FOO_BAR_RECORD, 19 + 16), 19, "data CRC mismatch"),
        *((FOO_RECORD[:n], 0, "truncated record") for n in (1, 8, 11)),
        (FOO_RECORD + FOO_RECORD[:11], 19, "truncated record"),
    ],
)
def test_beam_corrupt_records(tmp_path: Path, data: bytes, offset: int, reason: str) -> None:
    path = tmp_path / "bad.tfrecord"
    path.write_bytes(data)
    with pytest.raises(rf.CorruptRecordError) as info:
        list(rf.read_records(path))
    assert (info.value.path, info.value.offset) == (str(path), offset)
    assert info.value.reason.startswith(reason), info.value.reason


def test_beam_data_crc_damage_ignored_without_verify(tmp_path: Path) -> None:
    path = tmp_path / "bad.tfrecord"
    path.write_bytes(bump(FOO_RECORD, 16))  # the data's CRC
    assert list(rf.read_records(path, verify=False)) == [b"foo"]


def test_beam_length_crc_damage_refused_even_without_verify(tmp_path: Path) -> None:
    """A length whose CRC fails is never followed (2f8915d), as TensorFlow's reader: Beam's
    vector with its length CRC bumped is refused with verify=False too."""
    path = tmp_path / "bad.tfrecord"
    path.write_bytes(bump(FOO_RECORD, 9))  # the length's CRC
    for verify in (True, False):
        with pytest.raises(rf.CorruptRecordError, match="length CRC mismatch") as info:
            list(rf.read_records(path, verify=verify))
        assert info.value.offset == 0


def test_vahidk_example_bytes() -> None:
    assert rf.encode_example({"key": b"value"}) == VAHIDK_EXAMPLE
    assert rf.decode_example(VAHIDK_EXAMPLE) == {"key": [b"value"]}


@pytest.mark.parametrize("name", INDEX)
def test_index_and_byte_exact_rewrite(vectors: Path, tmp_path: Path, name: str) -> None:
    path = vectors / name
    expected = parse_index(INDEX[name].split("; "))
    records, index = read_framing(path)
    assert index == expected
    rewritten = tmp_path / "rewritten.tfrecord"
    with rf.TFRecordWriter(rewritten) as w:
        assert w.write_many(records) == [offset for offset, _ in expected]
    assert rewritten.read_bytes() == path.read_bytes()


def test_pytorch_data_examples(vectors: Path) -> None:
    records = list(rf.read_records(vectors / "pytorch_data/example.tfrecord"))
    assert len(records) == 4
    for i, record in enumerate(records):
        assert_features_equal(rf.decode_example(record), pytorch_data_features(i))


def test_pytorch_data_sequence_examples(vectors: Path) -> None:
    records = list(rf.read_records(vectors / "pytorch_data/sequence_example.tfrecord"))
    assert len(records) == 4
    for i, record in enumerate(records):
        context, feature_lists = rf.decode_sequence_example(record)
        features = pytorch_data_features(i)
        assert_features_equal(context, features)
        assert sorted(feature_lists) == sorted(f"{key}_seq" for key in features)
        for key, value in features.items():
            steps = feature_lists[f"{key}_seq"]
            assert len(steps) == 2 * i + 3
            for step in steps:
                assert_value_equal(step, value)


@pytest.mark.parametrize("split", DATUMARO)
def test_datumaro_od_api_records(vectors: Path, split: str) -> None:
    records = list(rf.read_records(vectors / f"datumaro_tf_od_api/{split}.tfrecord"))
    assert len(records) == 1
    features = rf.decode_example(records[0])
    (jpeg,) = features.pop("image/encoded")
    assert len(jpeg) == JPEG_SIZE
    assert jpeg.startswith(b"\xff\xd8\xff")
    assert_features_equal(features, DATUMARO[split])


def test_dali_index_is_consistent(vectors: Path) -> None:
    folder = vectors / "dali_index_only"
    lines = parse_index((folder / "train.idx").read_text().splitlines())
    pointer_lines = (folder / "train.LFS_POINTER.txt").read_text().splitlines()
    pointer = dict(line.split(" ", 1) for line in pointer_lines)
    offsets = [offset for offset, _ in lines]
    ends = [offset + size for offset, size in lines]
    assert offsets[0] == 0
    assert offsets[1:] == ends[:-1], "each record starts where the previous one ends"
    assert all(size > 16 for _, size in lines)
    assert ends[-1] == int(pointer["size"]), "the index covers the whole (LFS) file"


def assert_matches_proto(decoded: dict[str, object], example: object) -> None:
    """``decoded`` holds the values of every feature of a ``tf.train.Example``."""
    features = example.features.feature  # type: ignore[attr-defined]
    assert sorted(decoded) == sorted(features)
    for key, feature in features.items():
        kind = feature.WhichOneof("kind")
        value = decoded[key]
        if kind == "bytes_list":
            assert value == list(feature.bytes_list.value)
        else:  # a Feature with no kind decodes as an empty float32 array
            dtype = np.int64 if kind == "int64_list" else np.float32
            assert isinstance(value, np.ndarray) and value.dtype == dtype, key
            assert value.tolist() == (list(getattr(feature, kind).value) if kind else [])


@pytest.mark.parametrize("name", TFX_SHARDS)
def test_tfx_gzip_shards(shared_data: Path, name: str) -> None:
    import tensorflow as tf  # only this test needs TensorFlow

    count, stream_size = TFX_SHARDS[name]
    path = shared_data / "tfx_chicago_taxi/tfrecord_gzip" / name
    records = list(rf.read_records(path))
    assert len(records) == count
    assert sum(len(r) + 16 for r in records) == stream_size
    assert list(rf.read_records(path, compression="gzip")) == records
    decoded = [rf.decode_example(r) for r in records]
    assert {len(features) for features in decoded} == {TFX_COLUMNS}
    for i in range(0, count, TFX_SAMPLE_STEP):
        assert_matches_proto(decoded[i], tf.train.Example.FromString(records[i]))
