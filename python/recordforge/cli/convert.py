"""``recordforge convert coco|images|table``: a source -> ``write_dataset``, with a
progress bar and a closing summary. The flags shared by every source are defined once."""

from __future__ import annotations

import argparse
import gc
import json
import warnings
from collections.abc import Sized
from pathlib import Path
from typing import Any

from recordforge._fs import fspath, is_url, read_bytes, unchained
from recordforge._parallel import worker_count
from recordforge.cli._output import (
    conversion_progress,
    print_summary,
    progress_imported_beside,
)
from recordforge.errors import RecordforgeWarning
from recordforge.records import COMPRESSION_SUFFIXES
from recordforge.sources._read import DEFAULT_MAX_FILE_BYTES
from recordforge.splits import SplitSources
from recordforge.writer import WriteOptions, parse_size, write_source

HELP = "Convert a dataset (COCO, image folder, table) into sharded TFRecord files."


def _workers(value: str) -> int:
    """``--workers``: a number of processes, or ``auto`` (one per CPU)."""
    try:
        return worker_count(value if value == "auto" else int(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 1 or auto, not {value!r}") from None


def add_shared_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument(
        "--split",
        action="append",
        metavar="NAME",
        help="split name (default: train); repeat it for several splits, each with its "
        "own input (its own --annotations, table file or image folder, in the same order)",
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument("--max-records", type=int, help="records per shard (Keras example: 4096)")
    size.add_argument("--max-bytes", help="bytes per shard, e.g. 256MB (the default)")
    size.add_argument("--num-shards", type=int, help="exact number of shards")
    p.add_argument(
        "--name-template",
        default=WriteOptions.name_template,
        help="shard names; fields {split} {index} {count} {records}",
    )
    p.add_argument("--compression", choices=[c for c in COMPRESSION_SUFFIXES if c], default=None)
    p.add_argument("--index", action="store_true", help="write .idx files (DALI / tfrecord)")
    p.add_argument(
        "--checksum",
        choices=["crc32c", "sha256"],
        default=WriteOptions.checksum,
        help="shard checksum in dataset.json (default crc32c, at no measurable cost; "
        "sha256 ~1 GB/s per core)",
    )
    p.add_argument("--shuffle", action="store_true", help="shuffle items before writing")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--workers",
        type=_workers,
        default=1,
        metavar="N|auto",
        help="processes that convert items and write shards, the same files for any "
        "number (auto: one per CPU; default 1)",
    )
    p.add_argument(
        "--runner",
        choices=["local", "beam"],
        default="local",
        help="local: this machine; beam: an Apache Beam pipeline (same output)",
    )
    p.add_argument(
        "--beam-runner",
        metavar="NAME",
        help="Beam runner (DataflowRunner, FlinkRunner, SparkRunner, PortableRunner, ...); "
        "default: in this process. Beam's own options go after a lone --",
    )
    p.add_argument(
        "--on-error",
        choices=["raise", "skip", "fail"],
        default="raise",
        help="a bad item stops the conversion (raise; fail is the same) or is skipped and"
        " listed in the report (skip)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset")


def add_max_image_bytes(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-image-bytes",
        default=DEFAULT_MAX_FILE_BYTES,
        metavar="SIZE",
        help="largest image file read, e.g. 64MB (default 256MiB); a bigger file is an "
        "item error (see --on-error)",
    )


def add_parser(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="source", required=True)
    coco = sub.add_parser("coco", help="COCO instances JSON + image directory")
    coco.add_argument(
        "--annotations", required=True, action="append", help="instances_*.json (one per split)"
    )
    coco.add_argument(
        "--images", required=True, action="append", help="image directory (one, or one per split)"
    )
    coco.add_argument("--captions", action="append", help="captions_*.json (one per split)")
    coco.add_argument(
        "--keypoints", action="append", help="person_keypoints_*.json (one per split)"
    )
    coco.add_argument("--per", choices=["image", "annotation"], default="image")
    coco.add_argument("--bad-boxes", choices=["keep", "clip", "skip", "fail"])
    coco.add_argument(
        "--resize",
        type=int,
        metavar="MAX_SIDE",
        help="shrink images to this longest side (bilinear; JPEGs decoded at a reduced "
        "scale first where it is still >= the target), stored as JPEG",
    )
    coco.add_argument(
        "--reencode", type=int, metavar="QUALITY", help="store images as JPEG of this quality"
    )
    add_max_image_bytes(coco)
    add_shared_flags(coco)
    images = sub.add_parser("images", help="a folder with one subfolder per class")
    images.add_argument("root", nargs="+", help="folder of class subfolders (one per split)")
    images.add_argument(
        "--resize",
        type=int,
        metavar="MAX_SIDE",
        help="shrink larger images to this longest side (bicubic; JPEGs decoded at a "
        "reduced scale first where it is still >= the target), in their own format",
    )
    images.add_argument("--verify-images", action="store_true", help="decode every image")
    add_max_image_bytes(images)
    add_shared_flags(images)
    table = sub.add_parser("table", help="CSV, Parquet or JSONL")
    table.add_argument("file", nargs="+", help="the table file (one per split)")
    table.add_argument("--format", choices=["csv", "parquet", "jsonl"])
    table.add_argument(
        "--schema", help="dataset.json-style schema JSON to use instead of inference"
    )
    table.add_argument("--skip-rows", type=int, default=0, help="lines before the header")
    table.add_argument(
        "--part-bytes",
        type=parse_size,
        default=None,
        help="bytes of a CSV / JSON Lines file (uncompressed bytes of Parquet row groups) per"
        " part, the unit that a worker reads and --shuffle orders (default: 4MiB)",
    )
    table.add_argument(
        "--nullable-ints",
        choices=["int64", "float32"],
        default="int64",
        help="integer columns with missing values: keep int64, or float32 as TFX writes them",
    )
    add_shared_flags(table)


def options_from(args: argparse.Namespace) -> WriteOptions:
    return WriteOptions(
        max_records=args.max_records,
        max_bytes=args.max_bytes,
        num_shards=args.num_shards,
        name_template=args.name_template,
        compression=args.compression,
        index=args.index,
        shuffle=args.shuffle,
        seed=args.seed,
        checksum=args.checksum,
    )


def splits_of(args: argparse.Namespace) -> list[str]:
    """The split names: ``--split`` as given (each once), or ``train``."""
    splits: list[str] = args.split or ["train"]
    if len(set(splits)) != len(splits):
        raise ValueError(f"--split names a split twice: {splits}")
    return splits


def per_split(
    args: argparse.Namespace, flag: str, values: list[Any] | None, shared: bool = False
) -> list[Any]:
    """One value of ``flag`` per split: given once per split (``--split`` order), or
    once for every split where ``shared``; absent: None for each."""
    splits = splits_of(args)
    if values is None:
        return [None] * len(splits)
    if shared and len(values) == 1:
        return values * len(splits)
    if len(values) != len(splits):
        raise ValueError(
            f"{flag} is given {len(values)} times for {len(splits)} split(s) "
            f"({', '.join(splits)}): give it once per --split, in the same order"
        )
    return values


def _load(args: argparse.Namespace) -> dict[str, Any]:
    """The sources of the command. Their indexes (a COCO file's annotations: some objects
    per annotation) are built with the cyclic collector off, and frozen out of its way
    after, until :func:`run` ends: nothing they hold is garbage before then, and every
    collection during the conversion would walk them all again (~10% of the CPU of a
    conversion per annotation)."""
    gc.disable()
    try:
        sources = SOURCES[args.source](args)
    finally:
        gc.enable()
    gc.freeze()
    return sources


def coco_source(args: argparse.Namespace) -> dict[str, Any]:
    from recordforge.sources.coco import CocoSource

    kwargs: dict[str, Any] = {
        "per": args.per,
        "resize": args.resize,
        "reencode": args.reencode,
        "max_image_bytes": args.max_image_bytes,
    }
    if args.bad_boxes:
        kwargs["bad_boxes"] = args.bad_boxes
    inputs = zip(
        splits_of(args),
        per_split(args, "--annotations", args.annotations),
        per_split(args, "--images", args.images, shared=True),
        per_split(args, "--captions", args.captions),
        per_split(args, "--keypoints", args.keypoints),
        strict=True,
    )
    return {
        split: CocoSource.from_files(
            annotations, images, captions=captions, keypoints=keypoints, **kwargs
        )
        for split, annotations, images, captions, keypoints in inputs
    }


def images_source(args: argparse.Namespace) -> dict[str, Any]:
    from recordforge.sources.images import ImageFolderSource

    roots = per_split(args, "the image folder", args.root)
    return {
        split: ImageFolderSource(
            root,
            resize=args.resize,
            verify=args.verify_images,
            max_image_bytes=args.max_image_bytes,
        )
        for split, root in zip(splits_of(args), roots, strict=True)
    }


def table_source(args: argparse.Namespace) -> dict[str, Any]:
    from recordforge.schema import Schema
    from recordforge.sources.table import TableSource

    schema = None
    if args.schema:
        schema = Schema.from_json(json.loads(read_bytes(args.schema).decode("utf-8")))
    files = per_split(args, "the table file", args.file)
    return {
        split: TableSource(
            file,
            format=args.format,
            schema=schema,
            skip_rows=args.skip_rows,
            nullable_ints=args.nullable_ints,
            **({"part_bytes": args.part_bytes} if args.part_bytes else {}),
        )
        for split, file in zip(splits_of(args), files, strict=True)
    }


SOURCES = {"coco": coco_source, "images": images_source, "table": table_source}


def run_on_beam(args: argparse.Namespace, sources: dict[str, Any]) -> int:
    from recordforge.beam import convert

    manifest = convert(
        SplitSources(sources),
        args.out,
        on_error=args.on_error,
        overwrite=args.overwrite,
        options=options_from(args),
        runner=args.beam_runner,
        pipeline_args=getattr(args, "pipeline_args", []),
        workers=args.workers,
    )
    print_summary(manifest, args.out)
    return 0


def _warn_about_table_shuffle(sources: dict[str, Any]) -> None:
    """``--shuffle`` permutes items, and a table's items are parts of many rows: said,
    never left for the user to find in the output."""
    for split, source in sources.items():
        parts = source.parts()
        warnings.warn(
            f"--shuffle permutes {source.path}'s parts (split {split!r}: {len(parts)} "
            f"run(s) of rows of up to {source.part_bytes / 2**20:g} MiB), not its rows; the "
            "rows of a part keep their order. For rows in random order, shuffle when "
            "reading (Dataset.shuffle)",
            RecordforgeWarning,
            stacklevel=2,
        )


def run(args: argparse.Namespace) -> int:
    sources = _load(args)
    try:
        return _convert(args, sources)
    finally:
        gc.unfreeze()  # (for a caller that runs more in this process)


def _convert(args: argparse.Namespace, sources: dict[str, Any]) -> int:
    if args.source == "table" and args.shuffle:
        _warn_about_table_shuffle(sources)
    if args.runner == "beam":
        return run_on_beam(args, sources)
    if getattr(args, "pipeline_args", None):
        raise ValueError(f"options after -- are for --runner beam: {args.pipeline_args}")
    out: str | Path = unchained(args.out) if is_url(args.out) else Path(fspath(args.out))
    options = {
        "on_error": args.on_error,
        "overwrite": args.overwrite,
        "options": options_from(args),
        "workers": args.workers,
    }
    if len(sources) > 1:
        both = SplitSources(sources)
        with progress_imported_beside():
            splits = {name: both.items(name) for name in both.names}
        lengths = [len(items) if isinstance(items, Sized) else None for items in splits.values()]
        total = None if None in lengths else sum(n for n in lengths if n is not None)
        with conversion_progress(total, f"convert {args.source}") as progress:
            manifest = both.write(out, splits=splits, progress=progress, **options)
    else:
        [(split, source)] = sources.items()
        with progress_imported_beside():
            items = source.items()
        total = len(items) if hasattr(items, "__len__") else None
        with conversion_progress(total, f"convert {args.source}") as progress:
            manifest = write_source(
                source, out, items=items, split=split, progress=progress, **options
            )
    print_summary(manifest, out)
    return 0
