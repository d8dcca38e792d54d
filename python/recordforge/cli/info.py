"""``recordforge info``: splits, shards, records, sizes, compression and the schema."""

from __future__ import annotations

import argparse
from typing import Any

from recordforge import inspect
from recordforge.cli._inspect import (
    ROWS_SHOWN,
    add_inputs,
    add_max_features,
    byte_progress,
    print_more,
    render,
)

HELP = "Describe a dataset or TFRecord files: splits, shards, records, sizes, schema."


def scan_count(value: str) -> int | None:
    if value == "all":
        return None
    n = int(value)
    if n < 0:
        raise argparse.ArgumentTypeError("--scan takes a number >= 0 or 'all'")
    return n


def add_parser(parser: argparse.ArgumentParser) -> None:
    add_inputs(parser)
    parser.add_argument(
        "--scan",
        type=scan_count,
        default=1000,
        metavar="N|all",
        help="records decoded to infer the schema and lengths (default 1000)",
    )
    add_max_features(parser)


def run(args: argparse.Namespace) -> int:
    with byte_progress(args.paths, "info") as progress:
        result = inspect.info(
            args.paths,
            scan=args.scan,
            progress=progress,
            max_record_bytes=args.max_record_bytes,
            max_features=args.max_features,
        )
    return render(result, args.json, lambda out: _print_info(out, result))


def _print_info(out: Any, result: inspect.Info) -> None:
    from rich.table import Table

    records = f"{result.records:,}" if result.records is not None else "unknown"
    compression = ", ".join(c or "none" for c in result.compression)
    out.print(
        f"[bold]{result.record_type}[/] records: {records} in {len(result.files)} file(s), "
        f"{result.bytes:,} bytes, compression: {compression}"
    )
    if result.splits:
        table = Table(title="splits")
        for column in ("split", "shards", "records", "bytes"):
            table.add_column(column, justify="left" if column == "split" else "right")
        for name, s in result.splits.items():
            table.add_row(name, str(s["shards"]), f"{s['records']:,}", f"{s['bytes']:,}")
        out.print(table)
    files = Table(title="files")
    for column in ("file", "records", "bytes", "compression", "index"):
        files.add_column(column, justify="left" if column == "file" else "right")
    for f in result.files[:20]:
        n = f"{f.records:,}" if f.records is not None else "?"
        files.add_row(f.path, n, f"{f.bytes:,}", f.compression or "", "yes" if f.index else "")
    out.print(files)
    if len(result.files) > 20:
        out.print(f"... and {len(result.files) - 20} more files (use --json for all)")
    if result.features:
        features = Table(title=f"features ({result.schema_source})")
        for column in ("name", "part", "kind", "dtype", "shape", "lengths", "present", "meaning"):
            features.add_column(column)
        for feat in result.features[:ROWS_SHOWN]:
            lengths = (
                f"{feat.min_length}..{feat.max_length}" if feat.min_length is not None else "-"
            )
            features.add_row(
                feat.name,
                feat.part,
                feat.kind,
                feat.dtype,
                feat.shape,
                lengths,
                f"{feat.present}/{result.scanned}",
                feat.meaning or "",
            )
        out.print(features)
        print_more(out, len(result.features), "features")
