"""preview: a contact sheet of the images in records, boxes and captions drawn."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from recordforge import _fs
from recordforge.inspect._common import Paths, Problem, Result
from recordforge.inspect._decode import (
    DEFAULT_MAX_FEATURES,
    Record,
    RecordType,
    decoded_features,
    record_type,
    records_of,
)
from recordforge.inspect._files import resolve
from recordforge.inspect._values import image_of
from recordforge.records import DEFAULT_MAX_RECORD_BYTES
from recordforge.schema import BBox, ClassLabel, Image, Schema


@dataclasses.dataclass(frozen=True, kw_only=True)
class PreviewCell(Result):
    """Where one record's image went on the sheet: its top-left corner, its size
    there, the scale from the stored image, and the boxes drawn, in sheet pixels
    ``(x0, y0, x1, y1, label)``."""

    file: str
    record: int
    x: int
    y: int
    width: int
    height: int
    scale: float
    boxes: list[tuple[float, float, float, float, str]]
    caption: str | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class PreviewResult(Result):
    """The contact sheet written: its path and size, and one cell per record shown."""

    path: str
    width: int
    height: int
    cells: list[PreviewCell]
    problems: list[Problem]


_Box = tuple[float, float, float, float, str]


_BOX_COLORS = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48)]


def _find_image(ex: Mapping[str, Any], schema: Schema | None) -> str | None:
    if schema is not None:
        for name, spec in schema.items():
            if isinstance(spec.meaning, Image) and name in ex:
                return name
    for name in ("image/encoded", "image"):
        if isinstance(ex.get(name), list) and ex[name]:
            return name
    for name, value in ex.items():
        if isinstance(value, list) and value and image_of(value[0]) is not None:
            return name
    return None


def _label_names(ex: Mapping[str, Any], schema: Schema | None, key: str, n: int) -> list[str]:
    """Names of ``n`` objects: ``.../class/text``, else ids named by the schema."""
    text = ex.get("image/object/class/text")
    texts = [t.decode("utf-8", "replace") for t in text] if isinstance(text, list) else []
    if not key.startswith("image/object") or len(texts) != n:
        texts = [""] * n
    label_key = "image/object/class/label" if key.startswith("image/object") else "category_id"
    ids = ex.get(label_key)
    if not isinstance(ids, np.ndarray) or len(ids) != n:
        return texts
    spec = schema.get(label_key) if schema is not None else None
    out = []
    for i, t in zip(ids.tolist(), texts, strict=True):
        name = t or str(i)
        if not t and spec is not None and isinstance(spec.meaning, ClassLabel):
            with contextlib.suppress(ValueError, IndexError):
                name = spec.meaning.name_of(i)
        out.append(name)
    return out


def _boxes(
    ex: Mapping[str, Any], schema: Schema | None, width: int, height: int
) -> list[tuple[float, float, float, float, str]]:
    """Boxes in the stored image's pixels: OD-API ``image/object/bbox/*`` (normalized,
    or pixels when a value is above 1.5) or the Keras per-annotation ``bbox`` (xywh)."""
    keys = [f"image/object/bbox/{c}" for c in ("xmin", "ymin", "xmax", "ymax")]
    if all(isinstance(ex.get(k), np.ndarray) for k in keys):
        xmin, ymin, xmax, ymax = (ex[k].astype(np.float64) for k in keys)
        n = min(len(xmin), len(ymin), len(xmax), len(ymax))
        normalized = not any(len(a) and a.max() > 1.5 for a in (xmin, ymin, xmax, ymax))
        sx, sy = (width, height) if normalized else (1, 1)
        names = _label_names(ex, schema, keys[0], n)
        return [
            (
                float(xmin[i] * sx),
                float(ymin[i] * sy),
                float(xmax[i] * sx),
                float(ymax[i] * sy),
                names[i],
            )
            for i in range(n)
        ]
    bbox = ex.get("bbox")
    if isinstance(bbox, np.ndarray) and len(bbox) == 4:
        x, y, w, h = bbox.astype(np.float64).tolist()
        spec = schema.get("bbox") if schema is not None else None
        if spec is not None and isinstance(spec.meaning, BBox) and spec.meaning.normalized:
            x, y, w, h = x * width, y * height, w * width, h * height
        name = _label_names(ex, schema, "bbox", 1)[0]
        return [(x, y, x + w, y + h, name)]
    return []


def _caption(ex: Mapping[str, Any]) -> str | None:
    for name in ("image/caption", "caption", "captions", "text"):
        value = ex.get(name)
        if isinstance(value, list) and value:
            return str(value[0].decode("utf-8", "replace"))
    return None


def preview(
    paths: Paths,
    out: str | os.PathLike[str],
    *,
    n: int = 16,
    cell: int = 256,
    columns: int | None = None,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    max_features: int = DEFAULT_MAX_FEATURES,
) -> PreviewResult:
    """Writes a contact sheet (PNG, or any format Pillow writes by the suffix of
    ``out``) of the first ``n`` records that hold an image: each image scaled to fit a
    ``cell`` x ``cell`` square, its boxes drawn (a translucent fill and an outline) with
    their class names — TF Object Detection API keys or the Keras example's
    per-annotation ``bbox`` / ``category_id`` — and the first caption under it. Needs
    Pillow. Records without a decodable image are skipped and listed as problems.
    ``paths`` and ``out`` may be URLs (``gs://``, ``s3://``, ...): remote files are
    streamed (ranged reads); the sheet is uploaded under a temporary key and moved.
    """
    import io

    from PIL import Image as PILImage
    from PIL import ImageDraw, ImageFont

    items = resolve(paths)
    schema = items[0].manifest.schema if items and items[0].manifest else None
    problems: list[Problem] = []
    pictures: list[tuple[Record, Any, list[_Box], str | None]] = []
    for rec in records_of(items, problems, None, max_record_bytes, max_features):
        if len(pictures) >= n:
            break
        kind = record_type(rec.data)
        if kind not in ("Example", "SequenceExample"):
            continue
        ex = dict(_decoded_context(rec.data, kind))
        key = _find_image(ex, schema)
        if key is None:
            continue
        try:
            with PILImage.open(io.BytesIO(ex[key][0])) as img:
                rgb = img.convert("RGB")
        except Exception as e:  # Pillow raises many types for bad data
            problems.append(
                Problem(
                    file=rec.file,
                    kind="image",
                    record=rec.index,
                    offset=rec.offset,
                    message=f"feature {key!r}: image not decodable: {e}",
                )
            )
            continue
        pictures.append((rec, rgb, _boxes(ex, schema, *rgb.size), _caption(ex)))
    if not pictures:
        raise ValueError(f"no record with an image among {[i.name for i in items]}")
    font = ImageFont.load_default()
    cols = columns or math.ceil(math.sqrt(len(pictures)))
    rows = math.ceil(len(pictures) / cols)
    pad, caption_h = 8, 28
    sheet_w = cols * (cell + pad) + pad
    sheet_h = rows * (cell + pad + caption_h) + pad
    sheet = PILImage.new("RGB", (sheet_w, sheet_h), (32, 32, 32))
    cells = []
    for k, (rec, rgb, boxes, caption) in enumerate(pictures):
        x0 = pad + (k % cols) * (cell + pad)
        y0 = pad + (k // cols) * (cell + pad + caption_h)
        scale = min(cell / rgb.width, cell / rgb.height)
        size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
        thumb = rgb.resize(size, PILImage.Resampling.BILINEAR).convert("RGBA")
        overlay = PILImage.new("RGBA", size, (0, 0, 0, 0))
        draw = ImageDraw.Draw(overlay)
        drawn = []
        for j, (bx0, by0, bx1, by1, label) in enumerate(boxes):
            color = _BOX_COLORS[j % len(_BOX_COLORS)]
            box = (bx0 * scale, by0 * scale, bx1 * scale, by1 * scale)
            draw.rectangle(box, fill=(*color, 70), outline=(*color, 255), width=2)
            if label:
                draw.text((box[0] + 3, box[1] + 2), label, fill=(255, 255, 255, 255), font=font)
            drawn.append((x0 + box[0], y0 + box[1], x0 + box[2], y0 + box[3], label))
        sheet.paste(PILImage.alpha_composite(thumb, overlay).convert("RGB"), (x0, y0))
        text = f"{_fs.name(rec.file)} #{rec.index}" + (f": {caption}" if caption else "")
        ImageDraw.Draw(sheet).text(
            (x0, y0 + cell + 4), _fit(text, cell, font), fill=(230, 230, 230), font=font
        )
        cells.append(
            PreviewCell(
                file=rec.file,
                record=rec.index,
                x=x0,
                y=y0,
                width=size[0],
                height=size[1],
                scale=scale,
                boxes=drawn,
                caption=caption,
            )
        )
    target = _fs.fspath(out)  # (a file: URL: the path it names)
    if _fs.is_url(target):  # Pillow picks the format by the suffix of a local name
        with _fs.local_dir() as local:
            sheet.save(local / _fs.name(target))
            _fs.upload(local / _fs.name(target), target)
    else:
        sheet.save(Path(target))
    return PreviewResult(path=target, width=sheet_w, height=sheet_h, cells=cells, problems=problems)


def _decoded_context(data: bytes, kind: RecordType) -> Iterator[tuple[str, Any]]:
    for part, name, value, _ in decoded_features(data, kind):
        if part in ("feature", "context"):
            yield name, value


def _fit(text: str, width: int, font: Any) -> str:
    """``text`` cut (with an ellipsis) to fit ``width`` pixels in ``font``."""
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "...") > width:
        text = text[:-1]
    return text + "..."
