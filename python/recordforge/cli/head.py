"""``recordforge head``: the first records, decoded and pretty-printed."""

from __future__ import annotations

import argparse
import itertools

from recordforge import inspect
from recordforge.cli._inspect import (
    ROWS_SHOWN,
    add_inputs,
    add_max_features,
    console,
    print_json,
    print_more,
    print_problems,
)

HELP = "Print the first records, decoded (long bytes abbreviated, images summarised)."


def add_parser(parser: argparse.ArgumentParser) -> None:
    add_inputs(parser)
    parser.add_argument("-n", type=int, default=5, help="records to show (default 5)")
    parser.add_argument("--features", help="comma-separated feature names to show")
    add_max_features(parser)


def run(args: argparse.Namespace) -> int:
    features = [f for f in args.features.split(",") if f] if args.features else None
    result = inspect.head(
        args.paths,
        n=args.n,
        features=features,
        max_record_bytes=args.max_record_bytes,
        max_features=args.max_features,
    )
    code = 1 if result.problems else 0
    if args.json:
        print_json(result.to_json())
        return code
    out = console()
    for r in result.records:
        out.print(
            f"[bold]{r.file}[/] record {r.index} at byte offset {r.offset} "
            f"({r.size:,} bytes, {r.record_type})"
        )
        for name, value in itertools.islice(r.features.items(), ROWS_SHOWN):
            out.print(f"  {name}: {inspect.describe_value(value)}", markup=False, soft_wrap=True)
        print_more(out, len(r.features), "features", "--features or --json for the rest")
        for name, steps in (r.feature_lists or {}).items():
            out.print(f"  {name}: {len(steps)} step(s)", markup=False)
            for step in steps[:5]:
                out.print(f"    {inspect.describe_value(step)}", markup=False, soft_wrap=True)
            if len(steps) > 5:
                out.print("    ...")
        for k, example in enumerate(r.examples or []):
            out.print(f"  examples[{k}]:", markup=False)
            for name, value in example.items():
                text = inspect.describe_value(value)
                out.print(f"    {name}: {text}", markup=False, soft_wrap=True)
        if r.raw is not None:
            out.print(f"  (not an Example) {inspect.describe_value([r.raw])}", markup=False)
    print_problems(out, result.problems)
    return code
