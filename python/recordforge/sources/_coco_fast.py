"""The common COCO annotation, checked without a call per field: every value of a plain
type (ints for ids, ints or floats in float32's range for the box and area, polygons
that the Rust check takes). Anything else (an RLE, a bool or float id, a NaN, a
missing field) is left to the full checks of ``_coco_index``, which name the field.

:func:`plain_annotation` is ``_core.coco_plain_annotation`` (Rust: one call an
annotation, ~5x less time than this module's Python, which is its reference:
:func:`plain_annotation_py`, the tests' oracle).

>>> plain_annotation_py({"id": 1, "image_id": 2, "category_id": 3, "bbox": [0, 1.5, 2, 3],
...                   "area": 6, "iscrowd": 0, "segmentation": [[0, 0, 1, 0, 1, 1]]})
(1, 2, 3, (0.0, 1.5, 2.0, 3.0), 6.0, 0, ((0.0, 0.0, 1.0, 0.0, 1.0, 1.0),))
>>> plain_annotation_py({"id": True, "image_id": 2, "category_id": 3, "bbox": [0, 0, 1, 1]})
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from recordforge._core import coco_plain_annotation, coco_polygons

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# float32's largest finite value.
FLOAT32_MAX = 3.4028234663852886e38

Plain = tuple[
    int, int, int, tuple[float, float, float, float], float, int, tuple[tuple[float, ...], ...]
]


def _finite(value: Any) -> bool:
    kind = type(value)
    return (kind is int or kind is float) and -FLOAT32_MAX <= value <= FLOAT32_MAX


def plain_annotation_py(entry: Mapping[str, Any]) -> Plain | None:
    """``(id, image_id, category_id, bbox, area, iscrowd, polygons)`` of an annotation
    whose every field is plain and valid, as the full checks would give them; None
    otherwise (the full checks then run)."""
    ann_id, image_id, category_id = entry.get("id"), entry.get("image_id"), entry.get("category_id")
    for value in (ann_id, image_id, category_id):
        if type(value) is not int or not INT64_MIN <= value <= INT64_MAX:
            return None
    bbox = entry.get("bbox")
    if type(bbox) is not list or len(bbox) != 4:
        return None
    x, y, w, h = bbox
    area = entry.get("area", 0.0)
    if not (_finite(x) and _finite(y) and _finite(w) and _finite(h) and _finite(area)):
        return None
    iscrowd = entry.get("iscrowd", 0)
    if type(iscrowd) is not int or iscrowd not in (0, 1):
        return None
    segmentation = entry.get("segmentation")
    polygons: tuple[tuple[float, ...], ...] | None = ()
    if type(segmentation) is list:
        polygons = coco_polygons(segmentation)
    elif segmentation is not None:
        return None  # an RLE (or a bad value): the full checks
    if polygons is None:
        return None
    box = (float(x), float(y), float(w), float(h))
    assert isinstance(ann_id, int) and isinstance(image_id, int) and isinstance(category_id, int)
    return ann_id, image_id, category_id, box, float(area), iscrowd, polygons


plain_annotation: Callable[[Mapping[str, Any]], Plain | None] = coco_plain_annotation
