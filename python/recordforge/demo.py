"""The built-in demo: the shapes sample (COCO format) converted to a TFRecord dataset.

``recordforge demo`` makes a few hundred JPEGs with known shapes, boxes, polygons and
captions, converts them per image (TensorFlow Object Detection API keys) into sharded
TFRecord files with index files and ``dataset.json``, and reads one record back.

>>> import tempfile, recordforge.demo as demo
>>> with tempfile.TemporaryDirectory() as d:
...     report = demo.run(d, images=8)
>>> report.manifest.records(), sorted(report.first_record)[:3]
(8, ['image/caption', 'image/encoded', 'image/filename'])
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from recordforge.example import decode_example
from recordforge.manifest import Manifest
from recordforge.records import read_records
from recordforge.writer import Progress, write_dataset

__all__ = ["DemoReport", "run"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class DemoReport:
    """What the demo wrote: the dataset directory, its manifest, the first record."""

    out: Path
    manifest: Manifest
    first_record: dict[str, Any]


def run(
    out_dir: str | os.PathLike[str],
    *,
    images: int = 300,
    seed: int = 0,
    max_records: int = 100,
    progress: Progress | None = None,
) -> DemoReport:
    """Generates the shapes sample under ``out_dir/shapes`` and converts it into
    ``out_dir/dataset`` (needs Pillow, the ``images`` extra)."""
    from recordforge.sources.coco import CocoSource
    from recordforge.sources.samples import make_shapes

    root = Path(out_dir)
    paths = make_shapes(root / "shapes", images=images, seed=seed)
    source = CocoSource.from_files(paths.instances, paths.images, captions=paths.captions)
    out = root / "dataset"
    manifest = write_dataset(
        source.items(),
        out,
        to_records=source.to_records,
        schema=source.schema(),
        source=source.describe(),
        report=source.report(),
        max_records=max_records,
        index=True,
        overwrite=True,
        progress=progress,
    )
    first_file = out / manifest.splits["train"][0].file
    first = decode_example(next(iter(read_records(first_file))))
    return DemoReport(out=out, manifest=manifest, first_record=first)
