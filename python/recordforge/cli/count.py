"""``recordforge count``: exact record counts from the framing, the manifest or an index."""

from __future__ import annotations

import argparse

from recordforge import inspect
from recordforge.cli._inspect import add_inputs, byte_progress, console, print_json, print_problems

HELP = "Count records (from dataset.json or .idx when present; else a framing scan)."

_METHODS = {
    "manifest": "from dataset.json",
    "index": "from the .idx file",
    "scan": "framing scanned",
    "scan+crc": "framing scanned, CRCs checked",
}


def add_parser(parser: argparse.ArgumentParser) -> None:
    add_inputs(parser)
    parser.add_argument("--verify", action="store_true", help="also check every CRC")
    parser.add_argument(
        "--scan", action="store_true", help="walk the framing even when dataset.json or .idx know"
    )


def run(args: argparse.Namespace) -> int:
    with byte_progress(args.paths, "count") as progress:
        result = inspect.count(
            args.paths,
            verify=args.verify,
            scan=args.scan,
            progress=progress,
            max_record_bytes=args.max_record_bytes,
        )
    if args.json:
        print_json({"ok": result.ok, **result.to_json()})
        return 0 if result.ok else 1
    out = console()
    if len(result.files) > 1:
        for f in result.files:
            out.print(f"{f.records:>12,}  {f.path}  ({_METHODS[f.method]})", markup=False)
    methods = sorted({_METHODS[f.method] for f in result.files})
    out.print(
        f"[bold]{result.records:,}[/] records in {len(result.files)} file(s), "
        f"{result.bytes:,} bytes ({'; '.join(methods)})"
    )
    print_problems(out, result.problems)
    return 0 if result.ok else 1
