"""``recordforge demo``: run the built-in demo and show what it wrote."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from recordforge import demo

HELP = "Write a small sample dataset (plain, GZIP, ZLIB), read it back verified, show a record."


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", help="output directory (default: a temporary directory)")
    parser.add_argument("--records", type=int, default=1000, help="records to write")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    with tempfile.TemporaryDirectory(prefix="recordforge-demo-") as tmp:
        report = demo.run(args.out or tmp, records=args.records, seed=args.seed)
        table = Table(title="recordforge demo")
        for column in ("file", "compression", "records", "bytes", "write MB/s", "read MB/s", "ok"):
            table.add_column(column)
        for f in report.files:
            table.add_row(
                Path(f.path).name,
                f.compression,
                str(f.records),
                f"{f.bytes:,}",
                f"{f.bytes / 1e6 / max(f.write_seconds, 1e-9):.0f}",
                f"{f.bytes / 1e6 / max(f.read_seconds, 1e-9):.0f}",
                "yes" if f.roundtrip_ok else "NO",
            )
        console.print(table)
        console.print(f"written to {Path(report.files[0].path).parent}", markup=False)
        console.print("First record, decoded:")
        for name, value in report.first_record.items():
            shown = repr(value).replace("\n", " ")
            shown = shown if len(shown) < 80 else shown[:77] + "..."
            console.print(f"  {name}: {shown}", markup=False, highlight=False, soft_wrap=True)
        ok = all(f.roundtrip_ok for f in report.files)
        console.print("[green]all records read back intact[/]" if ok else "[red]MISMATCH[/]")
        return 0 if ok else 1
