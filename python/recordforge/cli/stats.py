"""``recordforge stats``: per-feature statistics."""

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

HELP = "Per-feature statistics: presence, lengths, numbers, top values, images, class labels."


def add_parser(parser: argparse.ArgumentParser) -> None:
    add_inputs(parser)
    parser.add_argument("--max-records", type=int, help="read at most this many records")
    parser.add_argument("--top", type=int, default=5, help="top values / labels shown (5)")
    add_max_features(parser)


def _num(x: Any) -> str:
    return "-" if x is None else f"{x:.6g}"


def run(args: argparse.Namespace) -> int:
    with byte_progress(args.paths, "stats") as progress:
        result = inspect.stats(
            args.paths,
            max_records=args.max_records,
            top=args.top,
            progress=progress,
            max_record_bytes=args.max_record_bytes,
            max_features=args.max_features,
        )
    return render(result, args.json, lambda out: _print_stats(out, result, args.top))


def _print_stats(out: Any, result: inspect.Stats, top_shown: int) -> None:
    from rich.table import Table

    out.print(f"[bold]{result.records:,}[/] {result.record_type} records")
    table = Table()
    for column in ("feature", "kind", "present", "length", "min", "max", "mean", "std", "top"):
        table.add_column(column)
    for f in result.features[:ROWS_SHOWN]:
        length = f.length
        lengths = f"{length['min']}..{length['max']} (mean {_num(length['mean'])})"
        n = f.numbers or {}
        top = ""
        if f.top_values:
            top = ", ".join(f"{v[:24]} ({c})" for v, c in f.top_values[:top_shown])
        elif f.images:
            im = f.images
            top = (
                f"{', '.join(f'{k} {v}' for k, v in im['formats'].items())}; "
                f"{im['width']['min']}-{im['width']['max']} x "
                f"{im['height']['min']}-{im['height']['max']} px"
            )
        table.add_row(
            f.name if f.part in ("feature",) else f"{f.name} ({f.part})",
            f.kind,
            f"{f.present}/{result.records}",
            lengths,
            _num(n.get("min")),
            _num(n.get("max")),
            _num(n.get("mean")),
            _num(n.get("std")),
            top,
        )
    out.print(table)
    print_more(out, len(result.features), "features")
    for f in result.features:
        if f.class_labels:
            labels = sorted(f.class_labels, key=lambda c: -c["count"])
            shown = ", ".join(f"{c['name'] or c['id']} ({c['count']})" for c in labels[:20])
            more = f", ... {len(labels) - 20} more" if len(labels) > 20 else ""
            out.print(f"[bold]{f.name}[/] classes: {shown}{more}", soft_wrap=True)
