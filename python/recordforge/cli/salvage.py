"""``recordforge salvage DAMAGED OUT``: copy every intact record into a new valid file."""

from __future__ import annotations

import argparse

from recordforge import inspect
from recordforge.cli._inspect import (
    ROWS_SHOWN,
    add_json,
    add_max_record_bytes,
    byte_progress,
    console,
    print_json,
    print_more,
)
from recordforge.records import COMPRESSION_SUFFIXES

HELP = "Copy every intact record of a damaged TFRecord file into a new file; report the losses."


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("damaged", help="the damaged TFRecord file (plain, GZIP or ZLIB)")
    parser.add_argument("out", help="the file to write")
    parser.add_argument(
        "--compression",
        choices=["same", "none", *(c for c in COMPRESSION_SUFFIXES if c)],
        default="same",
        help="of the output (default: as the input)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    add_max_record_bytes(parser)
    add_json(parser)


def run(args: argparse.Namespace) -> int:
    compression = None if args.compression == "none" else args.compression
    with byte_progress([args.damaged], "salvage") as progress:
        result = inspect.salvage(
            args.damaged,
            args.out,
            compression=compression,
            overwrite=args.overwrite,
            progress=progress,
            max_record_bytes=args.max_record_bytes,
        )
    code = 1 if result.damaged else 0
    if args.json:
        print_json({"damaged": result.damaged, **result.to_json()})
        return code
    out = console()
    out.print(f"wrote {result.records:,} intact records to {result.out}", markup=False)
    if not result.damaged:
        out.print("[green]the input was intact: nothing lost[/]")
        return 0
    out.print(
        f"[red]lost: {len(result.lost)} damaged region(s), {result.lost_bytes:,} bytes, "
        f"{result.lost_records} record(s) known lost[/] (more may have been inside "
        "regions where the framing was destroyed)"
    )
    for r in result.lost[:ROWS_SHOWN]:  # (a hostile file has one every few bytes)
        end = r.end if r.end is not None else "end"
        out.print(f"  bytes {r.start}..{end}: {r.reason}", markup=False, soft_wrap=True)
    print_more(out, len(result.lost), "damaged regions")
    return code
