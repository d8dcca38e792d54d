"""Rendering shared by the subcommands: progress bars and the conversion summary."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from recordforge.manifest import Manifest

# Seconds between two drawings of a progress bar.
REDRAW = 0.1


@contextlib.contextmanager
def progress_imported_beside() -> Iterator[None]:
    """Imports the progress bar's modules (rich: ~0.04-0.1 s of CPU) on a thread while
    the ``with`` block runs (a source's enumeration: the CSV type inference and row-end
    scan, which let the GIL go, or a COCO file's parse), and waits for it at the end: the
    workers fork after it, with no second thread, and the parent does not stop handing
    out work to import rich at the first item converted (measured on the 2-worker CSV
    conversion: the parent away ~0.1 s, a worker idle meanwhile)."""
    ended = threading.Event()

    def run() -> None:
        try:
            import rich.progress  # noqa: F401
        except Exception:  # (imported again where used: its error is raised there)
            pass
        finally:
            ended.set()

    thread = threading.Thread(target=run, name="recordforge-import", daemon=True)
    interrupted = started = False
    try:
        thread.start()
        started = True
        yield
    finally:
        # Waited for on an event: Python 3.11's Thread.join, interrupted, marks a thread
        # that still runs as stopped. A Ctrl-C meanwhile is raised once it has ended.
        while (started or thread.is_alive()) and not ended.is_set():
            try:
                ended.wait()
            except KeyboardInterrupt:
                interrupted = True
        if started:
            thread.join()
    if interrupted:
        raise KeyboardInterrupt


@contextlib.contextmanager
def conversion_progress(total: int | None, description: str) -> Iterator[Any]:
    """A rich progress bar (items, records/s, MB/s, ETA); yields the ``progress``
    callback ``write_dataset`` takes. The bar is made and drawn at the first item
    converted, so an error before any work (a refused directory, a bad option) prints no
    bar (rich is imported beforehand beside the source's enumeration, see
    :func:`progress_imported_beside`); then redrawn at most every :data:`REDRAW`
    seconds, by the callback itself: no drawing thread (a thread running would make
    worker processes spawn instead of fork), and no cost per item beyond adding two
    counts."""
    counts = {"records": 0, "bytes": 0}
    made: list[Any] = []  # the bar and its task, once made
    pending = [0, 0.0]  # items not drawn yet, when the bar was last drawn

    def draw() -> None:
        bar, task = made
        elapsed = bar.tasks[0].elapsed or 1e-9
        records_per_s = counts["records"] / elapsed
        megabytes_per_s = counts["bytes"] / elapsed / 1e6
        rate = f"{records_per_s:,.0f} rec/s {megabytes_per_s:,.1f} MB/s"
        bar.update(task, advance=pending[0], rate=rate)
        bar.refresh()
        pending[0], pending[1] = 0, time.monotonic()

    def progress(records: int, nbytes: int) -> None:
        if not made:
            bar = _progress_bar()
            bar.start()
            made.extend((bar, bar.add_task(description, total=total, rate="")))
        counts["records"] += records
        counts["bytes"] += nbytes
        pending[0] += 1
        if time.monotonic() - pending[1] >= REDRAW:
            draw()

    try:
        yield progress
    finally:
        if made:
            draw()
            made[0].stop()


def _progress_bar() -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=False,
        auto_refresh=False,
    )


# What the report's counters mean, for the summary (a counter not listed is shown by name).
COUNTERS = {
    "coco/bad_boxes": "COCO boxes that are degenerate or outside their image",
    "coco/bad_boxes/clip": "of them clipped to the image (--bad-boxes clip)",
    "coco/bad_boxes/skip": "of them dropped with their object (--bad-boxes skip)",
    "coco/bad_boxes/keep": "of them kept as they are (--bad-boxes keep)",
    "coco/bad_boxes/fail": "of them refused (--bad-boxes fail)",
}


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
        meaning = COUNTERS.get(name)
        console.print(
            f"{meaning} ({name}): {value}" if meaning else f"{name}: {value}", markup=False
        )
    items = manifest.report.get("items")
    if items is not None:
        console.print(f"input items read: {items:,}", markup=False)
    if skipped:
        console.print(
            f"[yellow]{len(skipped)} input item(s) skipped, not in the dataset "
            "(listed under report.skipped in dataset.json):[/]"
        )
        for entry in skipped[:20]:
            console.print(f"  {entry['item']}: {entry['reason']}", markup=False)
        if len(skipped) > 20:
            console.print(f"  ... and {len(skipped) - 20} more (see dataset.json)")
