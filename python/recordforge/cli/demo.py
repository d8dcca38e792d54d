"""``recordforge demo``: convert the built-in shapes sample and show the result."""

from __future__ import annotations

import argparse
import tempfile
from typing import Any

from recordforge import demo
from recordforge.cli._output import conversion_progress, print_summary

HELP = "Make the built-in COCO-format shapes sample, convert it, and show a decoded record."


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", help="output directory (default: a temporary directory)")
    parser.add_argument("--images", type=int, default=300, help="images to generate")
    parser.add_argument("--seed", type=int, default=0)


def _shown(value: Any) -> str:
    if isinstance(value, list) and value and isinstance(value[0], bytes) and len(value[0]) > 64:
        return f"[<{len(value[0]):,} bytes, starts {value[0][:4]!r}>]"
    text = repr(value).replace("\n", " ")
    return text if len(text) < 100 else text[:97] + "..."


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console()
    with tempfile.TemporaryDirectory(prefix="recordforge-demo-") as tmp:
        with conversion_progress(args.images, "convert shapes (COCO)") as progress:
            report = demo.run(
                args.out or tmp, images=args.images, seed=args.seed, progress=progress
            )
        print_summary(report.manifest, report.out)
        schema = report.manifest.schema
        if schema is not None:
            console.print(f"schema: {len(schema)} features", markup=False)
        console.print("first record, decoded:")
        for name, value in report.first_record.items():
            console.print(
                f"  {name}: {_shown(value)}", markup=False, highlight=False, soft_wrap=True
            )
    return 0
