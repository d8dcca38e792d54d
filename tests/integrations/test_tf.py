"""``to_tf_dataset``: TensorFlow's native path over recordforge datasets (tiny COCO per
image and per annotation) gives, for every feature of every record, the values
``rf.decode_example`` gives; images decode to the right HWC shapes and pixels."""

from __future__ import annotations

import dataclasses
import doctest
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import recordforge as rf
from recordforge.sources.coco import CocoSource

tf = pytest.importorskip("tensorflow")
from recordforge.integrations import tf as rf_tf  # noqa: E402
from recordforge.integrations.tf import image_features, to_tf_dataset  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Converted:
    out: Path
    manifest: rf.Manifest
    ds: Any
    records: list[dict[str, Any]]  # rf.decode_example of every record, in file order


def convert(source: CocoSource, out: Path, **kwargs: Any) -> Converted:
    manifest = rf.write_dataset(
        source.items(),
        out,
        to_records=source.to_records,
        schema=source.schema(),
        source=source.describe(),
        report=source.report(),
        **kwargs,
    )
    records = [
        rf.decode_example(r)
        for shards in manifest.splits.values()
        for s in shards
        for r in rf.read_records(out / s.file)
    ]
    return Converted(out, manifest, rf.open_dataset(out), records)


@pytest.fixture(scope="session")
def per_image(tiny: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Converted:
    source = CocoSource.from_files(
        tiny["annotations"], tiny["images"], captions=tiny["captions"], keypoints=tiny["keypoints"]
    )
    return convert(source, tmp_path_factory.mktemp("tf_per_image"), max_records=16)


@pytest.fixture(scope="session")
def per_annotation(tiny: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Converted:
    source = CocoSource.from_files(tiny["annotations"], tiny["images"], per="annotation")
    out = tmp_path_factory.mktemp("tf_per_annotation")
    return convert(source, out, max_records=100, compression="gzip")


def rows_of(batch: dict[str, Any], schema: rf.Schema) -> list[dict[str, Any]]:
    """A parsed batch split into per-record values in ``rf.decode_example``'s form."""
    n = None
    columns: dict[str, list[Any]] = {}
    for name, value in batch.items():
        spec = schema[name]
        if isinstance(value, tf.SparseTensor):
            assert not spec.fixed and not spec.ragged, name
            rows = [r.numpy() for r in tf.RaggedTensor.from_sparse(value)]
        elif isinstance(value, tf.RaggedTensor):
            assert spec.ragged, name
            rows = list(value)
            lengths = [r.row_lengths().numpy().astype(np.int64) for r in rows]
            columns[f"{name}/row_lengths"] = lengths
            rows = [r.flat_values.numpy() for r in rows]
        else:
            assert spec.fixed, name
            rows = [np.reshape(v, -1) for v in value.numpy()]
        columns[name] = rows
        assert n is None or n == len(rows)
        n = len(rows)
    return [{k: v[i] for k, v in columns.items()} for i in range(n or 0)]


def assert_same(got: dict[str, Any], want: dict[str, Any], names: Sequence[str]) -> None:
    for name in names:
        g, w = got[name], want.get(name)
        if w is None or (isinstance(w, np.ndarray) and w.dtype == np.float32 and not len(w)):
            # Absent, or present and empty: TF gives an empty row either way.
            assert len(g) == 0, name
        elif isinstance(w, list):
            assert [bytes(v) for v in g] == w, name
        else:
            assert g.dtype == w.dtype, name
            np.testing.assert_array_equal(g, w, err_msg=name)


def all_rows(tfds: Any, schema: rf.Schema) -> list[dict[str, Any]]:
    return [row for batch in tfds for row in rows_of(batch, schema)]


def test_per_image_every_feature_equals_decode_example(per_image: Converted) -> None:
    ds = per_image.ds
    assert len(ds.files) == 4
    tfds = to_tf_dataset(ds, batch_size=7, decode_images=False, interleave=False)
    got = all_rows(tfds, ds.schema)
    assert len(got) == len(per_image.records) == 50
    names = [*ds.schema, "image/object/mask/polygon/row_lengths"]
    names += ["image/object/mask/rle/counts/row_lengths", "image/object/keypoints/row_lengths"]
    for g, w in zip(got, per_image.records, strict=True):
        assert_same(g, w, names)
    # The features TF gives as SparseTensor / RaggedTensor, as documented.
    batch = next(iter(tfds))
    assert isinstance(batch["image/object/class/label"], tf.SparseTensor)
    assert isinstance(batch["image/object/mask/polygon"], tf.RaggedTensor)
    assert batch["image/encoded"].shape == (7,) and batch["image/encoded"].dtype == tf.string


def test_per_annotation_gzip_interleaved_every_feature_equals_decode_example(
    per_annotation: Converted,
) -> None:
    ds = per_annotation.ds
    assert ds.compression == "gzip" and len(ds.files) == 4
    tfds = to_tf_dataset(ds, batch_size=32, decode_images=False)  # shards read in parallel
    got = {int(row["id"][0]): row for row in all_rows(tfds, ds.schema)}
    want = {int(ex["id"][0]): ex for ex in per_annotation.records}
    assert len(want) == len(per_annotation.records) == 382
    assert sorted(got) == sorted(want)
    for key, row in got.items():
        assert_same(row, want[key], list(ds.schema))


def test_per_annotation_in_order_without_interleave(per_annotation: Converted) -> None:
    tfds = to_tf_dataset(per_annotation.ds, batch_size=50, features=["id"], interleave=False)
    ids = np.concatenate([b["id"].numpy() for b in tfds]).tolist()
    assert ids == [int(ex["id"][0]) for ex in per_annotation.records]


def flat(value: Any) -> Any:
    """A NumPy-path value (``Dataset`` iteration) in ``rf.decode_example``'s form."""
    if isinstance(value, bytes):
        return [value]
    array = np.reshape(np.asarray(value), -1)
    return [bytes(v) for v in array] if array.dtype == object else array


def test_numpy_path_and_tf_path_identical(per_image: Converted) -> None:
    ds = per_image.ds
    via_tf = to_tf_dataset(ds, batch_size=16, decode_images=False, interleave=False)
    got = all_rows(via_tf, ds.schema)
    numpy_rows = [{name: flat(v) for name, v in row.items()} for row in ds]
    assert len(got) == len(numpy_rows) == 50
    for g, w in zip(got, numpy_rows, strict=True):
        assert_same(g, w, list(w))
    # The method on Dataset is the same function.
    method = ds.select(["image/object/id"]).to_tf_dataset(batch_size=50, interleave=False)
    (batch,) = list(method)
    assert list(batch) == ["image/object/id"]
    ids = tf.RaggedTensor.from_sparse(batch["image/object/id"]).flat_values.numpy()
    assert ids.tolist() == [i for r in per_image.records for i in r["image/object/id"].tolist()]


@pytest.mark.parametrize("count", [2, 5])  # whole files (4 files), every 5th record
def test_shards_of_a_dataset_are_its_records(per_annotation: Converted, count: int) -> None:
    ds = per_annotation.ds
    seen: list[int] = []
    for index in range(count):
        part = ds.shard(index, count)
        tfds = to_tf_dataset(part, batch_size=64, features=["id"])
        ids = np.concatenate([b["id"].numpy() for b in tfds]).tolist()
        assert sorted(ids) == sorted(int(r["id"]) for r in part.select(["id"]))
        assert len(ids) == len(part)
        seen += ids
    assert sorted(seen) == sorted(int(ex["id"][0]) for ex in per_annotation.records)


def pil_decode(data: bytes) -> np.ndarray[Any, Any]:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


def test_images_decode_to_uint8_hwc_ragged(per_image: Converted) -> None:
    ds = per_image.ds
    assert image_features(ds.schema) == ["image/encoded"]
    tfds = to_tf_dataset(
        ds,
        batch_size=8,
        interleave=False,
        features=["image/encoded", "image/height", "image/width"],
    )
    seen = 0
    for batch in tfds:
        images = batch["image/encoded"]
        assert isinstance(images, tf.RaggedTensor) and images.dtype == tf.uint8
        for k, image in enumerate(images):
            dense = image.to_tensor().numpy()
            height, width = int(batch["image/height"][k]), int(batch["image/width"][k])
            assert dense.shape == (height, width, 3)
            want = pil_decode(per_image.records[seen]["image/encoded"][0])
            assert want.shape == dense.shape
            # Both are libjpeg(-turbo); allow for IDCT / upsampling differences.
            assert np.abs(dense.astype(np.int16) - want).mean() < 2.0
            seen += 1
    assert seen == 50


def test_images_resized_float32_and_keras_pairs(per_annotation: Converted) -> None:
    tfds = to_tf_dataset(
        per_annotation.ds,
        batch_size=16,
        image_size=(48, 40),
        features=["image"],
        label="category_id",
        drop_remainder=True,
        interleave=False,
    )
    assert tfds.element_spec[0].shape.as_list() == [16, 48, 40, 3]
    x, y = next(iter(tfds))
    assert x.dtype == tf.float32 and 0.0 <= float(tf.reduce_min(x)) < float(tf.reduce_max(x))
    assert float(tf.reduce_max(x)) <= 255.0
    assert y.dtype == tf.int64
    assert y.numpy().tolist() == [int(ex["category_id"][0]) for ex in per_annotation.records[:16]]
    # Without `features`, inputs are a dict of every other feature.
    square = to_tf_dataset(per_annotation.ds, batch_size=4, image_size=24, label="category_id")
    inputs, labels = next(iter(square))
    assert sorted(inputs) == sorted(n for n in per_annotation.ds.schema if n != "category_id")
    assert inputs["image"].shape == (4, 24, 24, 3) and labels.shape == (4,)


def test_numpy_path_images_equal_the_tf_path(per_image: Converted) -> None:
    """Decoded, the NumPy path's pixels are the tf.data path's, bit for bit; resized,
    they are ``np.round`` of TensorFlow's ``float32`` values (``tf.image.resize``)."""
    encoded = [r["image/encoded"][0] for r in per_image.records]
    for size, batch_size in [(None, 8), ((48, 40), 16), ((224, 224), 8)]:
        tfds = to_tf_dataset(
            per_image.ds,
            batch_size=batch_size,
            interleave=False,
            features=["image/encoded"],
            image_size=size,
        )
        got: list[np.ndarray[Any, Any]] = []
        for batch in tfds:
            images = batch["image/encoded"]
            got.extend(im.numpy() if size else im.to_tensor().numpy() for im in images)
        ours = rf.images.decode_batch(encoded, size=size, threads=2)
        assert len(got) == len(ours) == 50
        for theirs, mine in zip(got, ours, strict=True):
            if size is None:
                assert theirs.tobytes() == mine.tobytes()
            else:
                assert theirs.dtype == np.float32 and mine.dtype == np.uint8
                assert np.array_equal(np.round(theirs), mine)


def test_shuffle_reproducible_from_seed_and_repeat(per_annotation: Converted) -> None:
    def ids(seed: int | None, shuffle: int = 64) -> list[int]:
        tfds = to_tf_dataset(
            per_annotation.ds, batch_size=64, features=["id"], shuffle_buffer=shuffle, seed=seed
        )
        return np.concatenate([b["id"].numpy() for b in tfds]).tolist()

    plain = ids(None, shuffle=0)
    first, again, other = ids(1), ids(1), ids(2)
    assert first == again
    assert first != other and first != plain
    assert sorted(first) == sorted(other) == sorted(plain)
    looped = to_tf_dataset(
        per_annotation.ds, batch_size=100, features=["id"], repeat=True, drop_remainder=True
    )
    batches = [b["id"].numpy() for b in looped.take(8)]  # 800 records > one epoch of 382
    assert all(len(b) == 100 for b in batches)
    assert sorted(set(np.concatenate(batches).tolist())) == sorted(plain)


def test_bad_arguments(per_annotation: Converted) -> None:
    with pytest.raises(rf.SchemaError, match="nope"):
        to_tf_dataset(per_annotation.ds, features=["image", "nope"])
    with pytest.raises(ValueError, match="image_size"):
        to_tf_dataset(per_annotation.ds, image_size=(0, 3))
    with pytest.raises(ValueError, match="batch_size"):
        to_tf_dataset(per_annotation.ds, batch_size=0)


def test_docstring_examples() -> None:
    failures, tried = doctest.testmod(rf_tf, optionflags=doctest.ELLIPSIS)
    assert tried > 0 and failures == 0
