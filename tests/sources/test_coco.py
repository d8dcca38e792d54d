"""COCO source: per image (TF Object Detection API keys) and per annotation (the Keras
example's records) on real tiny COCO, read back by TensorFlow; every bad input."""

from __future__ import annotations

import doctest
import hashlib
import io
import json
import pickle
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import recordforge as rf
from recordforge.sources import coco as coco_module
from recordforge.sources.coco import CocoImage, CocoSource, load_coco, rle_from_string

INT64_FEATURES = ("image/object/class/label", "image/object/is_crowd", "image/object/id")


@pytest.fixture(scope="session")
def instances(tiny: dict[str, Path]) -> dict[str, Any]:
    return json.loads(tiny["annotations"].read_text())  # type: ignore[no-any-return]


def convert(source: CocoSource, out: Path, **kwargs: Any) -> rf.Manifest:
    kwargs.setdefault("report", source.report())
    return rf.write_dataset(
        source.items(),
        out,
        to_records=source.to_records,
        schema=source.schema(),
        source=source.describe(),
        **kwargs,
    )


def records(out: Path, manifest: rf.Manifest) -> list[bytes]:
    return [r for s in manifest.splits["train"] for r in rf.read_records(out / s.file)]


@pytest.fixture(scope="session")
def per_image(tiny: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Any:
    source = CocoSource.from_files(
        tiny["annotations"], tiny["images"], captions=tiny["captions"], keypoints=tiny["keypoints"]
    )
    out = tmp_path_factory.mktemp("per_image")
    manifest = convert(source, out, max_records=16)
    return source, manifest, records(out, manifest)


@pytest.fixture(scope="session")
def per_annotation(tiny: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Any:
    source = CocoSource.from_files(tiny["annotations"], tiny["images"], per="annotation")
    out = tmp_path_factory.mktemp("per_annotation")
    manifest = convert(
        source, out, max_records=4096, name_template="file_{index:02d}-{records}.tfrec"
    )
    return source, manifest, records(out, manifest), out


# --- real COCO, per image ---------------------------------------------------------


def test_per_image_records_objects_bytes_and_boxes(
    per_image: Any, tiny: dict[str, Path], instances: dict[str, Any]
) -> None:
    _, manifest, recs = per_image
    assert manifest.records() == 50 and len(recs) == 50
    images = {i["id"]: i for i in instances["images"]}
    anns: dict[int, list[dict[str, Any]]] = {}
    for a in instances["annotations"]:
        anns.setdefault(a["image_id"], []).append(a)
    captions: dict[int, list[str]] = {}
    for c in json.loads(tiny["captions"].read_text())["annotations"]:
        captions.setdefault(c["image_id"], []).append(c["caption"])
    objects = 0
    empty = 0
    for record in recs:
        ex = rf.decode_example(record)
        image_id = int(ex["image/source_id"][0])
        info = images[image_id]
        data = (tiny["images"] / info["file_name"]).read_bytes()
        assert ex["image/encoded"] == [data]
        assert ex["image/key/sha256"] == [hashlib.sha256(data).hexdigest().encode()]
        assert ex["image/filename"] == [info["file_name"].encode()]
        assert ex["image/format"] == [b"jpeg"]
        assert (ex["image/width"][0], ex["image/height"][0]) == (info["width"], info["height"])
        expected = anns.get(image_id, [])
        objects += len(ex["image/object/id"])
        empty += not expected
        assert ex["image/object/id"].tolist() == [a["id"] for a in expected]
        w, h = info["width"], info["height"]
        boxes = np.array([a["bbox"] for a in expected], dtype=np.float64).reshape(-1, 4)
        for key, want in (
            ("xmin", boxes[:, 0] / w),
            ("ymin", boxes[:, 1] / h),
            ("xmax", (boxes[:, 0] + boxes[:, 2]) / w),
            ("ymax", (boxes[:, 1] + boxes[:, 3]) / h),
        ):
            np.testing.assert_allclose(ex[f"image/object/bbox/{key}"], want, rtol=1e-6, atol=1e-7)
        assert ex["image/object/class/label"].tolist() == [a["category_id"] for a in expected]
        assert ex["image/object/is_crowd"].tolist() == [a["iscrowd"] for a in expected]
        np.testing.assert_allclose(ex["image/object/area"], [a["area"] for a in expected], 1e-6)
        assert [c.decode() for c in ex["image/caption"]] == captions[image_id]
        polygons = [p for a in expected if not a["iscrowd"] for p in a["segmentation"]]
        assert ex["image/object/mask/polygon/row_lengths"].tolist() == [len(p) for p in polygons]
        np.testing.assert_allclose(
            ex["image/object/mask/polygon"], [v for p in polygons for v in p], rtol=1e-6
        )
    assert objects == 382
    assert empty == 2  # images without objects are kept


def test_per_image_crowd_rle_keypoints_and_big_ids(
    per_image: Any, tiny: dict[str, Path], instances: dict[str, Any]
) -> None:
    _, _, recs = per_image
    crowd = [a for a in instances["annotations"] if a["iscrowd"]]
    assert crowd and max(a["id"] for a in crowd) > 2**31
    keypoints = {a["id"]: a for a in json.loads(tiny["keypoints"].read_text())["annotations"]}
    decoded = {int(ex["image/source_id"][0]): ex for ex in map(rf.decode_example, recs)}
    for a in crowd:
        ex = decoded[a["image_id"]]
        ids = ex["image/object/id"].tolist()
        k = ids.index(a["id"])  # the int64 id survives intact
        lengths = ex["image/object/mask/rle/counts/row_lengths"]
        start = int(lengths[:k].sum())
        counts = ex["image/object/mask/rle/counts"][start : start + lengths[k]]
        assert counts.tolist() == a["segmentation"]["counts"]
        size = ex["image/object/mask/rle/size"][2 * k : 2 * k + 2]
        assert size.tolist() == a["segmentation"]["size"]
        assert ex["image/object/mask/polygon/count"][k] == 0
    found = 0
    for ex in decoded.values():
        lengths = ex["image/object/keypoints/row_lengths"]
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        for k, ann_id in enumerate(ex["image/object/id"].tolist()):
            row = ex["image/object/keypoints"][offsets[k] : offsets[k + 1]]
            if ann_id in keypoints:
                found += 1
                assert row.tolist() == keypoints[ann_id]["keypoints"]
                assert ex["image/object/keypoints/num"][k] == keypoints[ann_id]["num_keypoints"]
            else:
                assert len(row) == 0
    assert found == len(keypoints)


def test_per_image_tensorflow_parses_every_record_with_our_schema(per_image: Any) -> None:
    tf = pytest.importorskip("tensorflow")
    source, manifest, recs = per_image
    schema = source.schema()
    assert manifest.schema == schema
    parsed = tf.io.parse_example(tf.constant(recs), schema.to_tf_feature_description())
    ours = [rf.decode_example(r) for r in recs]
    assert parsed["image/encoded"].numpy().tolist() == [ex["image/encoded"][0] for ex in ours]
    xmin = tf.sparse.to_dense(parsed["image/object/bbox/xmin"], default_value=-1.0).numpy()
    for row, ex in zip(xmin, ours, strict=True):
        n = len(ex["image/object/bbox/xmin"])
        np.testing.assert_array_equal(row[:n], ex["image/object/bbox/xmin"])
    polygons = parsed["image/object/mask/polygon"]
    for i, ex in enumerate(ours):
        rows = polygons[i].to_list()
        assert [len(r) for r in rows] == ex["image/object/mask/polygon/row_lengths"].tolist()
    captions = tf.sparse.to_dense(parsed["image/caption"], default_value=b"").numpy()
    assert all((row != b"").sum() >= 5 for row in captions)


def test_schema_keeps_coco_ids_with_gaps(per_image: Any, instances: dict[str, Any]) -> None:
    source, _, _ = per_image
    label = source.schema()["image/object/class/label"].meaning
    assert isinstance(label, rf.ClassLabel)
    cats = sorted((c["id"], c["name"]) for c in instances["categories"])
    assert label.ids == tuple(i for i, _ in cats) and label.names == tuple(n for _, n in cats)
    assert 90 in label.ids and 12 not in label.ids and label.name_of(90) == "toothbrush"
    image = source.schema()["image/encoded"].meaning
    assert isinstance(image, rf.Image) and image.format == "jpeg"
    assert rf.Schema.from_json(source.schema().to_json()) == source.schema()


# --- real COCO, per annotation: the Keras example's parse function ---------------------


def test_per_annotation_parsed_by_the_keras_example(
    per_annotation: Any, tiny: dict[str, Path], instances: dict[str, Any]
) -> None:
    tf = pytest.importorskip("tensorflow")
    _, manifest, recs, out = per_annotation
    assert manifest.records() == 382
    assert [s.file for s in manifest.splits["train"]] == ["file_00-382.tfrec"]

    # From the Keras example "Creating TFRecords", unchanged.
    def parse_tfrecord_fn(example: Any) -> Any:
        feature_description = {
            "image": tf.io.FixedLenFeature([], tf.string),
            "path": tf.io.FixedLenFeature([], tf.string),
            "area": tf.io.FixedLenFeature([], tf.float32),
            "bbox": tf.io.VarLenFeature(tf.float32),
            "category_id": tf.io.FixedLenFeature([], tf.int64),
            "id": tf.io.FixedLenFeature([], tf.int64),
            "image_id": tf.io.FixedLenFeature([], tf.int64),
        }
        example = tf.io.parse_single_example(example, feature_description)
        example["image"] = tf.io.decode_jpeg(example["image"], channels=3)
        example["bbox"] = tf.sparse.to_dense(example["bbox"])
        return example

    images = {i["id"]: i for i in instances["images"]}
    expected = {a["id"]: a for a in instances["annotations"]}
    seen = set()
    for raw in tf.data.TFRecordDataset(str(out / "file_00-382.tfrec")):
        ex = parse_tfrecord_fn(raw)
        ann = expected[int(ex["id"])]
        seen.add(ann["id"])
        info = images[ann["image_id"]]
        assert int(ex["image_id"]) == ann["image_id"]
        assert int(ex["category_id"]) == ann["category_id"]
        np.testing.assert_allclose(float(ex["area"]), ann["area"], rtol=1e-6)
        np.testing.assert_allclose(ex["bbox"].numpy(), ann["bbox"], rtol=1e-6)
        assert tuple(ex["image"].shape) == (info["height"], info["width"], 3)
        assert ex["path"].numpy().decode() == str(tiny["images"] / info["file_name"])
    assert seen == set(expected)
    for raw_bytes in recs:
        ann = expected[int(rf.decode_example(raw_bytes)["id"][0])]
        data = (tiny["images"] / images[ann["image_id"]]["file_name"]).read_bytes()
        assert rf.decode_example(raw_bytes)["image"] == [data]  # byte-identical


def test_per_annotation_tensorflow_parses_with_our_schema(per_annotation: Any) -> None:
    tf = pytest.importorskip("tensorflow")
    source, _, recs, _ = per_annotation
    parsed = tf.io.parse_example(tf.constant(recs), source.schema().to_tf_feature_description())
    ours = [rf.decode_example(r) for r in recs]
    assert parsed["id"].numpy().tolist() == [int(ex["id"][0]) for ex in ours]
    np.testing.assert_array_equal(parsed["bbox"].numpy(), np.stack([ex["bbox"] for ex in ours]))
    assert max(parsed["id"].numpy()) > 2**31


# --- synthetic bad inputs ---------------------------------------------------------


@pytest.fixture
def small(tmp_path: Path, tiny: dict[str, Path], instances: dict[str, Any]) -> dict[str, Any]:
    """Three real images (copied into tmp_path) and their annotations, as plain JSON."""
    images_dir = tmp_path / "images"
    images_dir.mkdir()
    annotated = {a["image_id"] for a in instances["annotations"]}
    chosen = [i for i in instances["images"] if i["id"] in annotated][:3]
    for info in chosen:
        shutil.copy(tiny["images"] / info["file_name"], images_dir / info["file_name"])
    ids = {i["id"] for i in chosen}
    return {
        "dir": tmp_path,
        "images_dir": images_dir,
        "json": {
            "images": [dict(i) for i in chosen],
            "annotations": [dict(a) for a in instances["annotations"] if a["image_id"] in ids],
            "categories": instances["categories"],
        },
    }


def write_small(small: dict[str, Any], **kwargs: Any) -> CocoSource:
    path = small["dir"] / "instances.json"
    path.write_text(json.dumps(small["json"]))
    return CocoSource.from_files(path, small["images_dir"], **kwargs)


def test_malformed_json_names_file_and_position(tmp_path: Path) -> None:
    path = tmp_path / "instances.json"
    path.write_text('{"images": [\n  {"id": 1,,}\n]}')
    with pytest.raises(rf.SchemaError, match=r"instances\.json: not valid JSON at line 2 column"):
        load_coco(path, tmp_path)
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg"}], "categories": []}))
    # A bad entry is an item error of its own (tests/sources/test_coco_hostile.py), not the file's.
    (problem,) = load_coco(path, tmp_path).problems
    assert problem.item == "image a.jpg (id 1)"
    assert re.search(r"instances\.json: images\[0\]: 'width'", problem.reason)
    path.write_text(json.dumps({"images": [{"id": 1}, {"id": 1}], "categories": []}))
    with pytest.raises(rf.SchemaError, match=r"instances\.json: images\[1\]: duplicate image id"):
        load_coco(path, tmp_path)
    captions = tmp_path / "captions.json"
    captions.write_text("[1, 2")
    path.write_text(json.dumps({"images": [], "categories": []}))
    with pytest.raises(rf.SchemaError, match=r"captions\.json: not valid JSON"):
        load_coco(path, tmp_path, captions=captions)


def _missing(small: dict[str, Any], info: dict[str, Any]) -> str:
    (small["images_dir"] / info["file_name"]).unlink()
    return "does not exist"


def _garbage(small: dict[str, Any], info: dict[str, Any]) -> str:
    (small["images_dir"] / info["file_name"]).write_bytes(b"this is not an image" * 50)
    return "not a JPEG or PNG"


def _truncated(small: dict[str, Any], info: dict[str, Any]) -> str:
    path = small["images_dir"] / info["file_name"]
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    return "truncated"


def _escape(small: dict[str, Any], info: dict[str, Any]) -> str:
    shutil.copy(small["images_dir"] / info["file_name"], small["dir"] / "outside.jpg")
    info["file_name"] = "../outside.jpg"
    return "escapes the image directory"


def _absolute(small: dict[str, Any], info: dict[str, Any]) -> str:
    info["file_name"] = str((small["images_dir"] / info["file_name"]).resolve())
    return "escapes the image directory"


def _wrong_size(small: dict[str, Any], info: dict[str, Any]) -> str:
    info["width"] += 1
    return "but the annotations say"


@pytest.mark.parametrize(
    "break_image", [_missing, _garbage, _truncated, _escape, _absolute, _wrong_size]
)
@pytest.mark.parametrize("per", ["image", "annotation"])
def test_bad_image_fails_or_is_skipped_by_name(
    small: dict[str, Any], tmp_path: Path, break_image: Any, per: str
) -> None:
    info = small["json"]["images"][1]
    reason = break_image(small, info)
    name = f"image {info['file_name']} (id {info['id']})"
    source = write_small(small, per=per)
    with pytest.raises(rf.ItemError) as e:
        convert(source, tmp_path / "fail")
    assert e.value.item == name and reason in e.value.reason
    assert info["file_name"] in str(e.value) and str(info["id"]) in str(e.value)
    manifest = convert(source, tmp_path / "skip", on_error="skip")
    assert [s["item"] for s in manifest.report["skipped"]] == [name]
    assert reason in manifest.report["skipped"][0]["reason"]
    per_image = {i["id"]: 0 for i in small["json"]["images"]}
    for a in small["json"]["annotations"]:
        per_image[a["image_id"]] += 1
    expected = 2 if per == "image" else sum(n for k, n in per_image.items() if k != info["id"])
    assert manifest.records() == expected


def test_unknown_image_id_is_a_named_problem(small: dict[str, Any], tmp_path: Path) -> None:
    small["json"]["annotations"].append(
        {"id": 77, "image_id": 123456789, "category_id": 1, "bbox": [0, 0, 1, 1], "area": 1}
    )
    source = write_small(small)
    assert [p.item for p in source.index.problems] == ["annotation 77"]
    with pytest.raises(rf.ItemError, match=r"annotation 77: image_id 123456789 names no image"):
        convert(source, tmp_path / "fail")
    assert not list((tmp_path / "fail").glob("*.tfrecord"))  # stopped before any work
    manifest = convert(source, tmp_path / "skip", on_error="skip")
    assert manifest.records() == 3
    reason = f"image_id 123456789 names no image in {source.index.annotations_file}"
    assert manifest.report["skipped"] == [{"item": "annotation 77", "reason": reason}]


def test_unknown_category_fails_the_image(small: dict[str, Any], tmp_path: Path) -> None:
    small["json"]["annotations"][0]["category_id"] = 12  # a gap in COCO's ids
    source = write_small(small)
    with pytest.raises(rf.ItemError, match="category_id 12 is unknown"):
        convert(source, tmp_path / "fail")


# --- degenerate boxes ------------------------------------------------------------


@pytest.fixture
def bad_boxes(small: dict[str, Any]) -> dict[str, Any]:
    info = small["json"]["images"][0]
    anns = [a for a in small["json"]["annotations"] if a["image_id"] == info["id"]]
    anns[0]["bbox"] = [10.0, 10.0, 0.0, 5.0]
    anns[1]["bbox"] = [info["width"] - 10.0, -4.0, 20.0, 14.0]
    small["bad"] = [anns[0]["id"], anns[1]["id"]]
    small["info"] = info
    return small


@pytest.mark.parametrize("per", ["image", "annotation"])
@pytest.mark.parametrize("mode", ["keep", "clip", "skip", "fail"])
def test_bad_boxes_modes(bad_boxes: dict[str, Any], tmp_path: Path, per: str, mode: str) -> None:
    small, info = bad_boxes, bad_boxes["info"]
    source = write_small(small, per=per, bad_boxes=mode)
    names = [f"annotation {i} of image {info['file_name']} (id {info['id']})" for i in small["bad"]]
    assert [item for item, _ in source.box_problems()] == names
    assert [f["item"] for f in source.describe()["bad_boxes_found"]] == names
    if mode == "fail":
        with pytest.raises(rf.ItemError, match=f"annotation {small['bad'][0]}: degenerate box"):
            convert(source, tmp_path / "out")
        return
    manifest = convert(source, tmp_path / "out")
    assert manifest.report["counters"] == {"coco/bad_boxes": 2, f"coco/bad_boxes/{mode}": 2}
    skipped = [s["item"] for s in manifest.report["skipped"]]
    assert skipped == (names if mode == "skip" else [])
    decoded = [rf.decode_example(r) for r in records(tmp_path / "out", manifest)]
    w, h = info["width"], info["height"]
    if per == "annotation":
        boxes = {int(ex["id"][0]): ex["bbox"].tolist() for ex in decoded}
        expected_boxes = {
            "keep": [[10.0, 10.0, 0.0, 5.0], [w - 10.0, -4.0, 20.0, 14.0]],
            "clip": [[10.0, 10.0, 0.0, 5.0], [w - 10.0, 0.0, 10.0, 10.0]],
        }
        if mode == "skip":
            assert not set(small["bad"]) & set(boxes)
        else:
            assert [boxes[i] for i in small["bad"]] == expected_boxes[mode]
        return
    (ex,) = [ex for ex in decoded if int(ex["image/source_id"][0]) == info["id"]]
    ids = ex["image/object/id"].tolist()
    if mode == "skip":
        assert not set(small["bad"]) & set(ids)
        return
    k = ids.index(small["bad"][1])
    box = [ex[f"image/object/bbox/{c}"][k] for c in ("xmin", "ymin", "xmax", "ymax")]
    want = [(w - 10) / w, -4 / h, (w + 10) / w, 10 / h]
    if mode == "clip":
        want = [(w - 10) / w, 0.0, 1.0, 10 / h]
    np.testing.assert_allclose(box, want, rtol=1e-6)


# --- options, pickling, helpers ----------------------------------------------------


@pytest.mark.parametrize("per", ["image", "annotation"])
def test_resize_and_reencode(small: dict[str, Any], tmp_path: Path, per: str) -> None:
    pil = pytest.importorskip("PIL.Image")
    source = write_small(small, per=per, resize=128, reencode=80)
    manifest = convert(source, tmp_path / "out")
    images = {i["id"]: i for i in small["json"]["images"]}
    anns = {a["id"]: a for a in small["json"]["annotations"]}
    for record in records(tmp_path / "out", manifest):
        ex = rf.decode_example(record)
        key = "image/encoded" if per == "image" else "image"
        img = pil.open(io.BytesIO(ex[key][0]))
        assert img.format == "JPEG" and max(img.size) == 128
        if per == "image":
            info = images[int(ex["image/source_id"][0])]
            assert (ex["image/width"][0], ex["image/height"][0]) == img.size
            a = anns[int(ex["image/object/id"][0])]
            np.testing.assert_allclose(
                ex["image/object/bbox/xmin"][0], a["bbox"][0] / info["width"], rtol=1e-6
            )
        else:
            a = anns[int(ex["id"][0])]
            info = images[int(ex["image_id"][0])]
            scale = img.size[0] / info["width"]
            np.testing.assert_allclose(ex["bbox"][0], a["bbox"][0] * scale, rtol=1e-5)


@pytest.mark.parametrize("resize", [100, 128, 320, 700])
def test_resize_decodes_jpegs_at_a_reduced_scale_first(
    small: dict[str, Any], tmp_path: Path, resize: int
) -> None:
    """A JPEG to be resized is decoded at the smallest of 1/2, 1/4 and 1/8 scale that is
    still at least the target (libjpeg's DCT scaling: ``draft``), then resized bilinear
    to the target: the stored bytes are those of that recipe, byte for byte, and differ
    from a full-size decode's where a reduced scale applies (an image no larger than
    ``resize`` is re-encoded at its size)."""
    source = write_small(small, resize=resize)
    manifest = convert(source, tmp_path / "out")
    images = {i["id"]: i for i in small["json"]["images"]}
    reduced = 0
    for record in records(tmp_path / "out", manifest):
        ex = rf.decode_example(record)
        info = images[int(ex["image/source_id"][0])]
        data = (small["images_dir"] / info["file_name"]).read_bytes()
        width, height = info["width"], info["height"]
        scale = min(1.0, resize / max(width, height))
        target = (max(1, round(width * scale)), max(1, round(height * scale)))

        assert ex["image/encoded"][0] == _resized_jpeg(data, target, draft=True)
        assert (ex["image/width"][0], ex["image/height"][0]) == target
        # Pillow's rule: the largest of 8, 4, 2 that divides both sides into >= target.
        if min(width // target[0], height // target[1]) >= 2:
            reduced += 1
            assert _resized_jpeg(data, target, draft=False) != _resized_jpeg(
                data, target, draft=True
            )
    assert reduced == {100: 3, 128: 3, 320: 1, 700: 0}[resize]  # 640x427, 352x230, 640x428


def _resized_jpeg(data: bytes, target: tuple[int, int], draft: bool) -> bytes:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        if draft:
            img.draft(None, target)
        # kept: the EXIF, and the colour profile of an RGB original
        keys = ("icc_profile", "exif") if img.mode == "RGB" else ("exif",)
        metadata = {key: img.info[key] for key in keys if img.info.get(key)}
        rgb = img.convert("RGB")
    if rgb.size != target:
        rgb = rgb.resize(target, Image.Resampling.BILINEAR)
    out = io.BytesIO()
    rgb.save(out, format="JPEG", quality=95, **metadata)
    return out.getvalue()


def test_source_and_items_pickle(small: dict[str, Any]) -> None:
    source = write_small(small, captions=None)
    again = pickle.loads(pickle.dumps(source))
    assert again == source
    item = source.items()[0]
    assert isinstance(item, CocoImage)
    assert again.to_records(pickle.loads(pickle.dumps(item))) == source.to_records(item)


def test_options_are_validated(small: dict[str, Any]) -> None:
    source = write_small(small)
    assert source.bad_boxes == "clip"
    assert CocoSource(index=source.index, per="annotation").bad_boxes == "keep"
    for kwargs in ({"per": "box"}, {"bad_boxes": "drop"}, {"resize": 0}, {"reencode": 101}):
        with pytest.raises(ValueError):
            CocoSource(index=source.index, **kwargs)


def _rle_to_string(counts: list[int]) -> str:
    """pycocotools' rleToString, for the round trip below."""
    out = []
    for i, c in enumerate(counts):
        x = c - counts[i - 2] if i > 2 else c
        more = True
        while more:
            ch = x & 0x1F
            x >>= 5
            more = x != -1 if ch & 0x10 else x != 0
            if more:
                ch |= 0x20
            out.append(chr(ch + 48))
    return "".join(out)


def test_compressed_rle_round_trip(instances: dict[str, Any]) -> None:
    for a in instances["annotations"]:
        if a["iscrowd"]:
            counts = a["segmentation"]["counts"]
            assert rle_from_string(_rle_to_string(counts)) == counts


def test_module_doctests() -> None:
    result = doctest.testmod(coco_module)
    assert result.attempted > 0 and result.failed == 0


def test_workers_give_identical_output(small: dict[str, Any], tmp_path: Path) -> None:
    source = write_small(small)
    one = convert(source, tmp_path / "one", max_records=2)
    two = convert(source, tmp_path / "two", max_records=2, workers=2)
    assert [s.checksum for s in one.splits["train"]] == [s.checksum for s in two.splits["train"]]
    assert one.report == two.report
