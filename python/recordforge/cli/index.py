"""``recordforge index``: ``.idx`` files (``offset size`` per record) for DALI / tfrecord."""

from __future__ import annotations

import argparse

from recordforge import inspect
from recordforge.cli._inspect import add_inputs, byte_progress, console, print_json, print_problems

HELP = "Write a .idx file beside each TFRecord file (one 'offset size' line per record)."


def add_parser(parser: argparse.ArgumentParser) -> None:
    add_inputs(parser)
    parser.add_argument("--no-verify", action="store_true", help="do not check data CRCs")


def run(args: argparse.Namespace) -> int:
    with byte_progress(args.paths, "index") as progress:
        result = inspect.write_index(
            args.paths,
            verify=not args.no_verify,
            progress=progress,
            max_record_bytes=args.max_record_bytes,
        )
    if args.json:
        print_json({"ok": result.ok, **result.to_json()})
        return 0 if result.ok else 1
    out = console()
    for f in result.files:
        if f.index_path is not None:
            out.print(f"wrote {f.index_path} ({f.records:,} records)", markup=False)
    print_problems(out, result.problems)
    return 0 if result.ok else 1
