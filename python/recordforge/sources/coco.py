"""COCO: instance annotations (+ captions, keypoints) and images -> TFRecord datasets.

:func:`load_coco` reads the JSON files into a :class:`CocoIndex` (plain, picklable
data); a :class:`CocoSource` turns each image into records, either one per image with
all its objects (keys of the TensorFlow Object Detection API) or one per annotation
(exactly the keys and types of the Keras example "Creating TFRecords").

>>> import json, os, tempfile, recordforge as rf
>>> from recordforge.sources.coco import CocoSource, load_coco, tiny_jpeg
>>> d = tempfile.mkdtemp()
>>> with open(f"{d}/a.jpg", "wb") as f:
...     _ = f.write(tiny_jpeg(width=40, height=20))
>>> with open(f"{d}/instances.json", "w") as f:
...     json.dump({"images": [{"id": 7, "file_name": "a.jpg", "width": 40, "height": 20}],
...                "annotations": [{"id": 1, "image_id": 7, "category_id": 3,
...                                 "bbox": [4, 2, 20, 10], "area": 200, "iscrowd": 0}],
...                "categories": [{"id": 3, "name": "car"}]}, f)
>>> source = CocoSource(index=load_coco(f"{d}/instances.json", d))
>>> (record,) = source.to_records(source.items()[0])
>>> ex = rf.decode_example(record)
>>> ex["image/object/bbox/xmin"].tolist(), ex["image/object/class/text"]
([0.10000000149011612], [b'car'])
>>> manifest = rf.write_dataset(source.items(), f"{d}/out", to_records=source.to_records,
...                             schema=source.schema(), source=source.describe())
>>> manifest.records()
1
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import os
from collections.abc import Sequence
from pathlib import PurePath
from typing import Any, Literal

import numpy as np

from recordforge import _fs
from recordforge.errors import ItemError
from recordforge.example import encode_example
from recordforge.imageformat import resized_size, sniff_image, tiny_jpeg
from recordforge.pipeline import ConversionReport
from recordforge.schema import BBox, ClassLabel, FeatureSpec, Image, Schema, Text
from recordforge.sources._coco_index import (
    CocoAnnotation,
    CocoImage,
    CocoIndex,
    CocoProblem,
    load_coco,
    rle_from_string,
)
from recordforge.sources._read import DEFAULT_MAX_FILE_BYTES, Refused, read_inside, size_limit
from recordforge.sources._resize import decode_for_resize, kept_metadata

__all__ = [
    "CocoAnnotation",
    "CocoImage",
    "CocoIndex",
    "CocoProblem",
    "CocoSource",
    "load_coco",
    "rle_from_string",
    "sniff_image",
    "tiny_jpeg",
]

Per = Literal["image", "annotation"]
BadBoxes = Literal["keep", "clip", "skip", "fail"]


def _box_problem(ann: CocoAnnotation, width: int, height: int) -> str | None:
    x, y, w, h = ann.bbox
    if w <= 0 or h <= 0:
        return f"degenerate box {list(ann.bbox)}: width or height <= 0"
    if x < 0 or y < 0 or x + w > width or y + h > height:
        return f"box {list(ann.bbox)} reaches outside the {width}x{height} image"
    return None


def _clip(ann: CocoAnnotation, width: int, height: int) -> tuple[float, float, float, float]:
    x, y, w, h = ann.bbox
    x0, y0 = min(max(x, 0.0), width), min(max(y, 0.0), height)
    x1, y1 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
    return x0, y0, max(x1 - x0, 0.0), max(y1 - y0, 0.0)


def _f32(values: Any) -> np.ndarray[Any, np.dtype[np.float32]]:
    return np.asarray(values, dtype=np.float32).reshape(-1)


def _i64(values: Any) -> np.ndarray[Any, np.dtype[np.int64]]:
    return np.asarray(values, dtype=np.int64).reshape(-1)


def _ragged(rows: Sequence[Sequence[float]], dtype: Any) -> tuple[np.ndarray[Any, Any], ...]:
    values = np.fromiter((v for row in rows for v in row), dtype=dtype)
    return values, np.array([len(row) for row in rows], dtype=np.int64)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CocoSource:
    """Converts a :class:`CocoIndex`: ``per="image"`` (one record per image with all
    its objects, TF Object Detection API keys) or ``per="annotation"`` (the Keras
    example's records). ``bad_boxes`` says what to do with a box of width or height
    <= 0 or reaching outside its image: ``keep`` (default per annotation), ``clip``
    (default per image), ``skip`` the object, or ``fail`` the image. ``resize`` (longest
    side, downscale only) and ``reencode`` (JPEG quality) need Pillow; by default image
    bytes are stored exactly as in their files. With ``resize``, every image is decoded
    and stored as a JPEG (quality ``reencode``, else 95); a JPEG is decoded at 1/2, 1/4
    or 1/8 scale where that is still at least the target (libjpeg's DCT scaling) before
    the bilinear resize, which costs a fraction of resizing it from full
    size (600 COCO images to 256: 1.70 s instead of 2.20 s, one worker; the pixels
    within 1.5 levels on average of a full-size decode's). JPEGs are decoded by
    libjpeg-turbo with its warnings as errors (``simplejpeg``, as ``verify --images``
    does): a damaged one is an item error, not stored re-encoded as a clean image.

    A box with a NaN or infinite value is not a bad box but a bad annotation, whatever
    ``bad_boxes`` says: :func:`load_coco` makes it a problem of its image, so the image
    is an item error (``on_error`` decides) and no record ever holds a non-finite box.

    Image files are untrusted input: only regular files inside ``index.images_dir`` are
    read (links resolved; a FIFO or device is refused without blocking), each of at most
    ``max_image_bytes`` (default 256 MiB; an int or a size such as ``"64MB"``). Any
    other file is an item error naming the image."""

    index: CocoIndex
    per: Per = "image"
    bad_boxes: BadBoxes | None = None
    resize: int | None = None
    reencode: int | None = None
    max_image_bytes: int | str = DEFAULT_MAX_FILE_BYTES

    def __post_init__(self) -> None:
        if self.per not in ("image", "annotation"):
            raise ValueError(f"per must be 'image' or 'annotation', not {self.per!r}")
        if self.bad_boxes is None:
            object.__setattr__(self, "bad_boxes", "clip" if self.per == "image" else "keep")
        if self.bad_boxes not in ("keep", "clip", "skip", "fail"):
            raise ValueError(
                f"bad_boxes must be 'keep', 'clip', 'skip' or 'fail', not {self.bad_boxes!r}"
            )
        if self.resize is not None and self.resize < 1:
            raise ValueError(f"resize must be >= 1, not {self.resize}")
        if self.reencode is not None and not 1 <= self.reencode <= 100:
            raise ValueError(f"reencode (JPEG quality) must be in 1..100, not {self.reencode}")
        object.__setattr__(self, "max_image_bytes", size_limit(self.max_image_bytes))

    @classmethod
    def from_files(
        cls,
        annotations: str | os.PathLike[str],
        images_dir: str | os.PathLike[str],
        *,
        captions: str | os.PathLike[str] | None = None,
        keypoints: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> CocoSource:
        """:func:`load_coco` then a source with the given options."""
        index = load_coco(annotations, images_dir, captions=captions, keypoints=keypoints)
        return cls(index=index, **kwargs)

    def items(self) -> tuple[CocoImage | CocoProblem, ...]:
        """The load-time problems (first, so that ``on_error="raise"`` stops before any
        work), then every image in file order, those without objects included."""
        return (*self.index.problems, *self.index.images)

    def describe(self) -> dict[str, Any]:
        """The ``source`` entry of ``dataset.json``; ``bad_boxes_found`` names every
        degenerate box and what was done with it."""
        return {
            "type": "coco",
            "annotations": self.index.annotations_file,
            "images_dir": self.index.images_dir,
            "captions": self.index.captions_file,
            "keypoints": self.index.keypoints_file,
            "per": self.per,
            "bad_boxes": self.bad_boxes,
            "resize": self.resize,
            "reencode": self.reencode,
            "bad_boxes_found": [
                {"item": item, "reason": reason, "action": self.bad_boxes}
                for item, reason in self.box_problems()
            ],
        }

    def box_problems(self) -> list[tuple[str, str]]:
        """``(annotation name, what is wrong)`` for every degenerate box."""
        out = []
        for image in self.index.images:
            if image.problems:  # the image is an item error: its boxes are not read
                continue
            for ann in image.annotations:
                problem = _box_problem(ann, image.width, image.height)
                if problem is not None:
                    out.append((f"annotation {ann.id} of {image.name}", problem))
        return out

    def report(self) -> ConversionReport:
        """A report to pass to ``write_dataset(report=...)``, holding the box counters
        (``coco/bad_boxes`` and ``coco/bad_boxes/<action>``); with ``bad_boxes="skip"``
        every dropped object is listed as skipped. Computed from the JSON alone, so it
        is the same whichever process converts which image."""
        report = ConversionReport()
        problems = self.box_problems()
        report.count("coco/bad_boxes", len(problems))
        report.count(f"coco/bad_boxes/{self.bad_boxes}", len(problems))
        if self.bad_boxes == "skip":
            for item, reason in problems:
                report.skip(item, f"{reason}; object dropped (bad_boxes='skip')")
        return report

    @functools.cached_property
    def _declared_format(self) -> str | None:
        """The image format the schema names: ``jpeg`` when every file name ends in
        ``.jpg`` / ``.jpeg`` (or images are re-encoded), ``png`` when every one ends in
        ``.png``, else None. A file whose bytes are of another format is an ItemError."""
        if self.resize is not None or self.reencode is not None:
            return "jpeg"
        formats = {PurePath(i.file_name).suffix.lower() for i in self.index.images}
        return "jpeg" if formats <= {".jpg", ".jpeg"} else ("png" if formats == {".png"} else None)

    def schema(self) -> Schema:
        """The schema of the records ``to_records`` makes."""
        labels = ClassLabel(
            names=tuple(name for _, name in self.index.categories),
            ids=tuple(i for i, _ in self.index.categories),
        )
        image = Image(format=self._declared_format)
        if self.per == "annotation":
            return Schema(
                {
                    "image": FeatureSpec(dtype="bytes", meaning=image),
                    "path": FeatureSpec(dtype="string"),
                    "area": FeatureSpec(dtype="float32"),
                    "bbox": FeatureSpec(dtype="float32", shape=(4,), meaning=BBox(layout="xywh")),
                    "category_id": FeatureSpec(dtype="int64", meaning=labels),
                    "id": FeatureSpec(dtype="int64"),
                    "image_id": FeatureSpec(dtype="int64"),
                }
            )
        var = (None,)
        features = {
            "image/encoded": FeatureSpec(dtype="bytes", meaning=image),
            "image/format": FeatureSpec(dtype="string"),
            "image/height": FeatureSpec(dtype="int64"),
            "image/width": FeatureSpec(dtype="int64"),
            "image/filename": FeatureSpec(dtype="string"),
            "image/source_id": FeatureSpec(dtype="string"),
            "image/key/sha256": FeatureSpec(dtype="string"),
            **{
                f"image/object/bbox/{c}": FeatureSpec(
                    dtype="float32", shape=var, meaning=BBox(layout=c, normalized=True)
                )
                for c in ("xmin", "ymin", "xmax", "ymax")
            },
            "image/object/class/label": FeatureSpec(dtype="int64", shape=var, meaning=labels),
            "image/object/class/text": FeatureSpec(dtype="string", shape=var, meaning=Text()),
            "image/object/area": FeatureSpec(dtype="float32", shape=var),
            "image/object/is_crowd": FeatureSpec(dtype="int64", shape=var),
            "image/object/id": FeatureSpec(dtype="int64", shape=var),
            "image/object/mask/polygon": FeatureSpec(dtype="float32", shape=(None, None)),
            "image/object/mask/polygon/count": FeatureSpec(dtype="int64", shape=var),
            "image/object/mask/rle/counts": FeatureSpec(dtype="int64", shape=(None, None)),
            "image/object/mask/rle/size": FeatureSpec(dtype="int64", shape=var),
        }
        if self.index.keypoints_file is not None:
            features["image/object/keypoints"] = FeatureSpec(dtype="float32", shape=(None, None))
            features["image/object/keypoints/num"] = FeatureSpec(dtype="int64", shape=var)
        if self.index.captions_file is not None:
            features["image/caption"] = FeatureSpec(dtype="string", shape=var, meaning=Text())
        return Schema(features)

    def to_records(self, item: CocoImage | CocoProblem) -> tuple[bytes, ...]:
        """The records of one item (for ``write_dataset(to_records=...)``); raises
        :class:`~recordforge.ItemError` naming the image (file name and id) when it
        cannot be converted."""
        if isinstance(item, CocoProblem):
            raise ItemError(item.item, item.reason)
        if item.problems:
            raise ItemError(item.name, "; ".join(item.problems))
        data, fmt, width, height = self._image(item)
        sx, sy = width / item.width, height / item.height
        objects = self._objects(item)
        if self.per == "annotation":
            path = os.path.join(self.index.images_dir, item.file_name)
            return tuple(
                encode_example(
                    {  # Python floats are written as float32, as NumPy would round them
                        "image": data,
                        "path": path,
                        "area": ann.area * sx * sy,
                        "bbox": [box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy],
                        "category_id": ann.category_id,
                        "id": ann.id,
                        "image_id": item.id,
                    }
                )
                for ann, box in objects
            )
        return (encode_example(self._image_features(item, objects, data, fmt, sx, sy)),)

    def _image_features(
        self,
        item: CocoImage,
        objects: list[tuple[CocoAnnotation, tuple[float, float, float, float]]],
        data: bytes,
        fmt: str,
        sx: float,
        sy: float,
    ) -> dict[str, Any]:
        names = dict(self.index.categories)
        anns = [ann for ann, _ in objects]
        boxes = np.array([box for _, box in objects], dtype=np.float64).reshape(-1, 4)
        polygons = [
            [v * (sx if k % 2 == 0 else sy) for k, v in enumerate(poly)]
            for ann in anns
            for poly in ann.polygons
        ]
        features: dict[str, Any] = {
            "image/encoded": data,
            "image/format": fmt,
            "image/height": round(item.height * sy),
            "image/width": round(item.width * sx),
            "image/filename": item.file_name,
            "image/source_id": str(item.id),
            "image/key/sha256": hashlib.sha256(data).hexdigest(),
            "image/object/bbox/xmin": _f32(boxes[:, 0] / item.width),
            "image/object/bbox/ymin": _f32(boxes[:, 1] / item.height),
            "image/object/bbox/xmax": _f32((boxes[:, 0] + boxes[:, 2]) / item.width),
            "image/object/bbox/ymax": _f32((boxes[:, 1] + boxes[:, 3]) / item.height),
            "image/object/class/label": _i64([a.category_id for a in anns]),
            "image/object/class/text": np.array(
                [names[a.category_id].encode() for a in anns], dtype=np.bytes_
            ),
            "image/object/area": _f32([a.area * sx * sy for a in anns]),
            "image/object/is_crowd": _i64([a.iscrowd for a in anns]),
            "image/object/id": _i64([a.id for a in anns]),
            "image/object/mask/polygon/count": _i64([len(a.polygons) for a in anns]),
            "image/object/mask/rle/size": _i64([a.rle_size or (0, 0) for a in anns]),
        }
        for name, rows, dtype in (
            ("image/object/mask/polygon", polygons, np.float32),
            ("image/object/mask/rle/counts", [a.rle_counts for a in anns], np.int64),
        ):
            features[name], features[f"{name}/row_lengths"] = _ragged(rows, dtype)
        if self.index.keypoints_file is not None:
            rows = [
                [v * (sx if k % 3 == 0 else sy if k % 3 == 1 else 1) for k, v in enumerate(kp)]
                for kp in (a.keypoints for a in anns)
            ]
            kp_values, kp_lengths = _ragged(rows, np.float32)
            features["image/object/keypoints"] = kp_values
            features["image/object/keypoints/row_lengths"] = kp_lengths
            features["image/object/keypoints/num"] = _i64([a.num_keypoints for a in anns])
        if self.index.captions_file is not None:
            features["image/caption"] = np.array(
                [c.encode() for c in item.captions], dtype=np.bytes_
            )
        return features

    @functools.cached_property
    def _category_ids(self) -> frozenset[int]:
        return frozenset(i for i, _ in self.index.categories)

    def _objects(
        self, item: CocoImage
    ) -> list[tuple[CocoAnnotation, tuple[float, float, float, float]]]:
        """The objects kept, each with its box after the ``bad_boxes`` policy."""
        out = []
        known = self._category_ids
        for ann in item.annotations:
            if ann.category_id not in known:
                raise ItemError(
                    item.name, f"annotation {ann.id}: category_id {ann.category_id} is unknown"
                )
            problem = _box_problem(ann, item.width, item.height)
            box = ann.bbox
            if problem is not None:
                if self.bad_boxes == "fail":
                    raise ItemError(item.name, f"annotation {ann.id}: {problem}")
                if self.bad_boxes == "skip":
                    continue
                if self.bad_boxes == "clip":
                    box = _clip(ann, item.width, item.height)
            out.append((ann, box))
        return out

    def _image(self, item: CocoImage) -> tuple[bytes, str, int, int]:
        """The bytes to store, their format, width and height; checks the file."""
        path = _fs.join(self.index.images_dir, item.file_name)
        try:
            data = read_inside(
                self.index.images_dir,
                item.file_name,
                limit=int(self.max_image_bytes),
                where="the image directory",
            )
        except Refused as e:
            raise ItemError(item.name, str(e)) from None
        except FileNotFoundError:
            raise ItemError(item.name, f"image file {path} does not exist") from None
        except OSError as e:
            raise ItemError(item.name, f"cannot read image file {path}: {e}") from None
        try:
            fmt, width, height = sniff_image(data)
        except ValueError as e:
            raise ItemError(item.name, f"{path} is not a readable image: {e}") from None
        if (width, height) != (item.width, item.height):
            raise ItemError(
                item.name,
                f"{path} is {width}x{height} but the annotations say {item.width}x{item.height}",
            )
        if self.resize is None and self.reencode is None:
            if self._declared_format not in (None, fmt):
                raise ItemError(
                    item.name,
                    f"{path} holds {fmt.upper()} bytes, but the schema says "
                    f"{self._declared_format} (from the file names)",
                )
            return data, fmt, width, height
        return self._transcode(item, path, data)

    def _transcode(self, item: CocoImage, path: str, data: bytes) -> tuple[bytes, str, int, int]:
        try:
            from PIL import Image as PILImage
        except ImportError:
            raise ImportError("resize and reencode need Pillow: pip install pillow") from None
        try:
            with PILImage.open(io.BytesIO(data)) as img:
                target = resized_size(img.size, self.resize)
                # A JPEG: libjpeg-turbo, strict, at the DCT scale Pillow's draft picks.
                decoded = decode_for_resize(data, img, target, rgb_copy=True)
                metadata = kept_metadata(decoded, "RGB")
                if decoded.mode == "L" and target is not None and decoded.size != target:
                    # Resized first (the same pixels: one channel, copied to three after),
                    # not a full-size RGB copy three times its size.
                    decoded = decoded.resize(target, PILImage.Resampling.BILINEAR)
                rgb = decoded.convert("RGB")
        except (OSError, ValueError, SyntaxError, PILImage.DecompressionBombError) as e:
            raise ItemError(item.name, f"{path} cannot be decoded: {e}") from None
        if target is not None and rgb.size != target:
            rgb = rgb.resize(target, PILImage.Resampling.BILINEAR)
        width, height = rgb.size
        buffer = io.BytesIO()
        try:
            rgb.save(buffer, format="JPEG", quality=self.reencode or 95, **metadata)
        except (OSError, ValueError) as e:
            raise ItemError(item.name, f"{path} cannot be encoded as a JPEG: {e}") from None
        return buffer.getvalue(), "jpeg", width, height
