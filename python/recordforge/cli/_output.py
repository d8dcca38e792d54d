"""Rendering shared by the subcommands: progress bars and the conversion summary."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from recordforge.manifest import Manifest


@contextlib.contextmanager
def conversion_progress(total: int | None, description: str) -> Iterator[Any]:
    """A rich progress bar (items, records/s, MB/s, ETA); yields the ``progress``
    callback ``write_dataset`` takes."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    counts = {"records": 0, "bytes": 0}
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=False,
    ) as bar:
        task = bar.add_task(description, total=total, rate="")

        def progress(records: int, nbytes: int) -> None:
            counts["records"] += records
            counts["bytes"] += nbytes
            elapsed = bar.tasks[task].elapsed or 1e-9
            records_per_s = counts["records"] / elapsed
            megabytes_per_s = counts["bytes"] / elapsed / 1e6
            rate = f"{records_per_s:,.0f} rec/s {megabytes_per_s:,.1f} MB/s"
            bar.update(task, advance=1, rate=rate)

        yield progress


def print_summary(manifest: Manifest, out: Path | str) -> None:
    """The closing summary: splits, shards, records, bytes, skipped items."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"dataset written to {out}")
    for column in ("split", "shards", "records", "bytes"):
        table.add_column(column, justify="right" if column != "split" else "left")
    for split, shards in manifest.splits.items():
        table.add_row(
            split,
            str(len(shards)),
            f"{sum(s.records for s in shards):,}",
            f"{sum(s.bytes for s in shards):,}",
        )
    console.print(table)
    skipped = manifest.report.get("skipped", [])
    counters = manifest.report.get("counters", {})
    for name, value in counters.items():
        console.print(f"{name}: {value}", markup=False)
    if skipped:
        console.print(f"[yellow]{len(skipped)} item(s) skipped:[/]")
        for entry in skipped[:20]:
            console.print(f"  {entry['item']}: {entry['reason']}", markup=False)
        if len(skipped) > 20:
            console.print(f"  ... and {len(skipped) - 20} more (see dataset.json)")
