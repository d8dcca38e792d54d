"""The built-in demo: the shapes sample (COCO format) converted to a TFRecord dataset.

``recordforge demo`` makes a few hundred JPEGs with known shapes, boxes, polygons and
captions, converts them per image (TensorFlow Object Detection API keys) into sharded
TFRecord files with index files and ``dataset.json``, and reads one record back. Then
:func:`train` trains a small CNN on it for a few hundred steps on CPU (the Keras
example's last step, with a small model and small images so that it takes about half a
minute), evaluated on held-out images made with another seed.

>>> import tempfile, recordforge.demo as demo
>>> with tempfile.TemporaryDirectory() as d:
...     report = demo.run(d, images=8)
>>> report.manifest.records(), sorted(report.first_record)[:3]
(8, ['image/caption', 'image/encoded', 'image/filename'])
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from recordforge import _fs
from recordforge.example import decode_example
from recordforge.manifest import Manifest
from recordforge.records import read_records
from recordforge.schema import ClassLabel
from recordforge.writer import Progress, write_source

__all__ = ["DemoReport", "TrainReport", "run", "train"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class DemoReport:
    """What the demo wrote: the dataset directory (a URL when ``run`` was given one), its
    manifest, the first record."""

    out: Path | str
    manifest: Manifest
    first_record: dict[str, Any]


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainReport:
    """What :func:`train` did: Keras' history per epoch (``loss``, ``accuracy`` on the
    training batches; ``val_loss``, ``val_accuracy`` on the held-out images), and the
    accuracy of always answering the most frequent class of the held-out images."""

    history: dict[str, list[float]]
    model: str
    image_size: int
    steps: int
    epochs: int
    classes: tuple[str, ...]
    heldout_images: int
    chance: float


def run(
    out_dir: str | os.PathLike[str],
    *,
    images: int = 300,
    seed: int = 0,
    max_records: int = 100,
    progress: Progress | None = None,
) -> DemoReport:
    """Generates the shapes sample under ``out_dir/shapes`` and converts it into
    ``out_dir/dataset`` (needs Pillow, the ``images`` extra). ``out_dir`` may be a URL
    (``gs://``, ``s3://``, ...): the sample is then made in a local temporary directory
    and only the dataset is written there."""
    out_dir = _fs.fspath(out_dir)  # (a file: URL: the path it names)
    remote = _fs.is_url(out_dir)
    out: Path | str = _fs.join(out_dir, "dataset") if remote else Path(out_dir) / "dataset"
    with _fs.local_dir() as local:
        shapes = local if remote else Path(out_dir)
        manifest = _convert(shapes / "shapes", out, images, seed, max_records, progress)
    first_file = _fs.staged(_fs.join(out, manifest.splits["train"][0].file))
    first = decode_example(next(iter(read_records(first_file))))
    return DemoReport(out=out, manifest=manifest, first_record=first)


def train(
    report: DemoReport,
    *,
    steps: int = 400,
    epochs: int = 10,
    image_size: int = 64,
    model: str = "small",
    batch_size: int = 32,
    learning_rate: float = 3e-3,
    heldout: int = 100,
    seed: int = 0,
    on_epoch: Callable[[int, Mapping[str, float]], None] | None = None,
) -> TrainReport:
    """Trains ``model`` (see :func:`recordforge.integrations.train.build_model`) to tell
    the class of each image's first shape (circle, square, triangle) from the dataset
    :func:`run` wrote, ``steps`` batches in all, in ``epochs`` epochs, on images resized
    to ``image_size``; evaluates after each epoch on ``heldout`` new images (made with
    seed ``seed + 1``, converted beside the dataset). Needs TensorFlow and Keras."""
    from recordforge.dataset import open_dataset
    from recordforge.integrations.train import class_label_feature, train_classifier

    if steps < epochs or epochs < 1:
        raise ValueError(f"need epochs >= 1 and steps >= epochs, not {steps=} {epochs=}")
    root = _fs.parent(report.out)
    heldout_out = _fs.join(root, "heldout")
    with _fs.local_dir() as local:  # beside a URL, the sample's images stay local
        shapes = local if _fs.is_url(root) else Path(root)
        _convert(shapes / "heldout_shapes", heldout_out, heldout, seed + 1, 100, None)
    ds, validation = open_dataset(report.out), open_dataset(heldout_out)
    history = train_classifier(
        ds,
        model=model,
        image_size=image_size,
        batch_size=batch_size,
        epochs=epochs,
        steps_per_epoch=steps // epochs,
        learning_rate=learning_rate,
        seed=seed,
        validation=validation,
        on_epoch=on_epoch,
    )
    label = class_label_feature(ds.schema)
    meaning = ds.schema[label].meaning
    assert isinstance(meaning, ClassLabel)
    first = Counter(int(ex[label][0]) for ex in _records(heldout_out) if len(ex[label]))
    return TrainReport(
        history=history,
        model=model,
        image_size=image_size,
        steps=steps // epochs * epochs,
        epochs=epochs,
        classes=meaning.names,
        heldout_images=heldout,
        chance=max(first.values()) / sum(first.values()),
    )


def _records(out: Path | str) -> Iterator[dict[str, Any]]:
    manifest = Manifest.load(out)
    for shards in manifest.splits.values():
        for shard in shards:
            for record in read_records(_fs.staged(_fs.join(out, shard.file))):
                yield decode_example(record)


def _convert(
    shapes: Path,
    out: Path | str,
    images: int,
    seed: int,
    max_records: int,
    progress: Progress | None,
) -> Manifest:
    from recordforge.sources.coco import CocoSource
    from recordforge.sources.samples import make_shapes

    paths = make_shapes(shapes, images=images, seed=seed)
    source = CocoSource.from_files(paths.instances, paths.images, captions=paths.captions)
    return write_source(
        source,
        out,
        max_records=max_records,
        index=True,
        overwrite=True,
        progress=progress,
    )
