"""The built-in shapes sample: deterministic, and its annotations describe its pixels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from recordforge.sources.samples import make_shapes


def test_same_seed_same_bytes_other_seed_other_images(tmp_path: Path) -> None:
    a = make_shapes(tmp_path / "a", images=5, seed=3)
    b = make_shapes(tmp_path / "b", images=5, seed=3)
    c = make_shapes(tmp_path / "c", images=5, seed=4)
    assert a.instances.read_bytes() == b.instances.read_bytes()
    for f in sorted(a.images.iterdir()):
        assert f.read_bytes() == (b.images / f.name).read_bytes()
    assert a.instances.read_bytes() != c.instances.read_bytes()


def test_boxes_cover_the_drawn_shapes(tmp_path: Path) -> None:
    paths = make_shapes(tmp_path, images=20, seed=0)
    data = json.loads(paths.instances.read_text())
    captions = json.loads(paths.captions.read_text())["annotations"]
    assert {c["image_id"] for c in captions} == {im["id"] for im in data["images"]}
    by_image: dict[int, list[dict[str, object]]] = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    for image in data["images"]:
        pixels = np.asarray(Image.open(paths.images / image["file_name"]).convert("L"), np.int16)
        assert pixels.shape == (image["height"], image["width"])
        mask = np.zeros(pixels.shape, bool)
        for ann in by_image[image["id"]]:
            x, y, w, h = ann["bbox"]  # type: ignore[misc]
            assert w > 0 and h > 0 and ann["area"] > 0  # type: ignore[operator]
            assert x >= 0 and y >= 0
            assert x + w <= image["width"] and y + h <= image["height"]
            mask[int(y) : int(np.ceil(y + h)) + 1, int(x) : int(np.ceil(x + w)) + 1] = True
        background = np.median(pixels[~mask]) if (~mask).any() else 255
        # Outside every box the image is (JPEG-noisy) background; inside, shapes differ from it.
        assert np.abs(pixels[~mask] - background).mean() < 8
        assert np.abs(pixels[mask] - background).max() > 40
