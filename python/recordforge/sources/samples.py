"""The built-in "shapes" sample: a small COCO-format dataset made on the spot.

JPEG images with drawn circles, squares and triangles whose category, box, area and
polygon are known exactly, plus one caption per image; deterministic from the seed, no
network. ``recordforge demo`` converts it; tests use it as a COCO stand-in of any size.

>>> import json, tempfile, recordforge.sources.samples as samples
>>> with tempfile.TemporaryDirectory() as d:
...     paths = samples.make_shapes(d, images=4, seed=1)
...     data = json.loads(paths.instances.read_text())
>>> len(data["images"]), [c["name"] for c in data["categories"]]
(4, ['circle', 'square', 'triangle'])
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CATEGORIES", "ShapesPaths", "make_shapes"]

CATEGORIES: list[dict[str, Any]] = [
    {"id": 1, "name": "circle", "supercategory": "shape"},
    {"id": 2, "name": "square", "supercategory": "shape"},
    {"id": 3, "name": "triangle", "supercategory": "shape"},
]
COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 200, 30),
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class ShapesPaths:
    """Where :func:`make_shapes` put things."""

    root: Path
    images: Path
    instances: Path
    captions: Path


def _polygon(kind: str, cx: float, cy: float, r: float) -> list[float]:
    if kind == "circle":
        points = [
            (cx + r * math.cos(2 * math.pi * k / 16), cy + r * math.sin(2 * math.pi * k / 16))
            for k in range(16)
        ]
    elif kind == "square":
        points = [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    else:
        points = [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    return [round(v, 2) for p in points for v in p]


def _area(polygon: list[float]) -> float:
    xs, ys = polygon[0::2], polygon[1::2]
    n = len(xs)
    return abs(sum(xs[i] * ys[(i + 1) % n] - xs[(i + 1) % n] * ys[i] for i in range(n))) / 2


def make_shapes(
    out_dir: str | os.PathLike[str], *, images: int = 300, size: int = 128, seed: int = 0
) -> ShapesPaths:
    """Writes ``images`` JPEGs and COCO ``instances`` / ``captions`` JSON under ``out_dir``."""
    from PIL import Image, ImageDraw

    root = Path(out_dir)
    image_dir = root / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    coco_images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    captions: list[dict[str, Any]] = []
    for image_id in range(1, images + 1):
        background = tuple(int(v) for v in rng.integers(200, 256, size=3))
        canvas = Image.new("RGB", (size, size), background)
        draw = ImageDraw.Draw(canvas)
        words = []
        for _ in range(int(rng.integers(1, 4))):
            category = CATEGORIES[int(rng.integers(0, 3))]
            color = list(COLORS)[int(rng.integers(0, len(COLORS)))]
            r = float(rng.uniform(size * 0.08, size * 0.22))
            cx, cy = (float(v) for v in rng.uniform(r, size - r, size=2))
            polygon = _polygon(category["name"], cx, cy, r)
            draw.polygon(list(zip(polygon[0::2], polygon[1::2], strict=True)), fill=COLORS[color])
            xs, ys = polygon[0::2], polygon[1::2]
            x0, y0 = min(xs), min(ys)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category["id"],
                    "bbox": [
                        round(x0, 2),
                        round(y0, 2),
                        round(max(xs) - x0, 2),
                        round(max(ys) - y0, 2),
                    ],
                    "area": round(_area(polygon), 2),
                    "segmentation": [polygon],
                    "iscrowd": 0,
                }
            )
            words.append(f"a {color} {category['name']}")
        file_name = f"{image_id:06d}.jpg"
        canvas.save(image_dir / file_name, quality=90)
        coco_images.append({"id": image_id, "file_name": file_name, "width": size, "height": size})
        captions.append({"id": image_id, "image_id": image_id, "caption": " and ".join(words)})
    info = {"description": "recordforge shapes sample", "seed": seed}
    instances = root / "instances.json"
    instances.write_text(
        json.dumps(
            {
                "info": info,
                "images": coco_images,
                "annotations": annotations,
                "categories": CATEGORIES,
            }
        )
    )
    caption_path = root / "captions.json"
    caption_path.write_text(
        json.dumps({"info": info, "images": coco_images, "annotations": captions})
    )
    return ShapesPaths(root=root, images=image_dir, instances=instances, captions=caption_path)
