"""``recordforge preview --out grid.png``: a contact sheet of images with boxes drawn."""

from __future__ import annotations

import argparse

from recordforge import inspect
from recordforge.cli._inspect import (
    add_inputs,
    add_max_features,
    console,
    print_json,
    print_problems,
)

HELP = "Draw a contact sheet of N records: images, boxes with class names, captions."


def add_parser(parser: argparse.ArgumentParser) -> None:
    add_inputs(parser)
    add_max_features(parser)
    parser.add_argument("--out", required=True, help="image file to write, e.g. grid.png")
    parser.add_argument("-n", type=int, default=16, help="records to show (default 16)")
    parser.add_argument("--cell", type=int, default=256, help="cell size in pixels (256)")
    parser.add_argument("--columns", type=int, help="columns (default: about square)")


def run(args: argparse.Namespace) -> int:
    result = inspect.preview(
        args.paths,
        args.out,
        n=args.n,
        cell=args.cell,
        columns=args.columns,
        max_record_bytes=args.max_record_bytes,
        max_features=args.max_features,
    )
    code = 1 if result.problems else 0
    if args.json:
        print_json(result.to_json())
        return code
    out = console()
    boxes = sum(len(c.boxes) for c in result.cells)
    out.print(
        f"wrote {result.path} ({result.width}x{result.height}): "
        f"{len(result.cells)} record(s), {boxes} box(es)",
        markup=False,
    )
    print_problems(out, result.problems)
    return code
