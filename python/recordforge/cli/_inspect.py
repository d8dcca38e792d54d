"""Helpers shared by the inspection subcommands (info, head, count, verify, salvage,
index, stats, preview): input arguments, a byte progress bar, JSON and problem output."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from recordforge.inspect import Problem, resolve
from recordforge.records import DEFAULT_MAX_RECORD_BYTES

# Below this many bytes of input no progress bar is drawn: the work takes moments.
PROGRESS_MIN_BYTES = 32 << 20

# Rows of a table (features of a record in head) shown; the rest are counted on a line of
# their own. rich lays a table out at ~1 ms a row: a record of a million features kept
# info and stats busy for many minutes. --json gives them all.
ROWS_SHOWN = 1000


def print_more(out: Any, total: int, noun: str, hint: str = "use --json for all") -> None:
    """The line that says how many of ``total`` were left out of a listing."""
    if total > ROWS_SHOWN:
        out.print(f"... and {total - ROWS_SHOWN:,} more {noun} ({hint})", markup=False)


def add_inputs(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="a dataset directory (with dataset.json), a directory of TFRecord files, a "
        "glob, or files; GZIP/ZLIB compression is detected",
    )
    add_max_record_bytes(p)
    add_json(p)


def record_size(value: str) -> int:
    """A ``--max-record-bytes`` value: bytes, or a size such as ``512MiB`` or ``2GB``."""
    from recordforge.sharding import parse_size

    try:
        n = parse_size(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 byte, not {value!r}")
    if n >= 1 << 64:
        raise argparse.ArgumentTypeError(f"must be below 2**64 bytes, not {value!r}")
    return n


def add_max_features(p: argparse.ArgumentParser) -> None:
    from recordforge.inspect import DEFAULT_MAX_FEATURES

    p.add_argument(
        "--max-features",
        type=int,
        default=DEFAULT_MAX_FEATURES,
        metavar="N",
        help=f"records of more features are reported, not described (default "
        f"{DEFAULT_MAX_FEATURES:,}): each feature costs memory and time",
    )


def add_max_record_bytes(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-record-bytes",
        type=record_size,
        default=DEFAULT_MAX_RECORD_BYTES,
        metavar="SIZE",
        help="largest record read, e.g. 2GiB (default 1GiB): a record whose length field "
        "claims more is reported as damaged, before anything is allocated for it",
    )


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON (for scripts) instead")


def console() -> Any:
    from rich.console import Console

    # Piped output is not cut to 80 columns: file paths and tables stay readable.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 160)


@contextlib.contextmanager
def byte_progress(paths: Sequence[str], description: str) -> Iterator[Any]:
    """A rich progress bar over the bytes of the input files, on stderr (``--json``
    output stays clean); yields the ``progress(nbytes)`` callback, or ``None`` when the
    input is small."""
    try:
        total = sum(f.size() for f in resolve(paths) if f.exists())
    except OSError:
        total = 0
    if total < PROGRESS_MIN_BYTES:
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.update(task, advance=n)


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2)
    sys.stdout.write("\n")


def print_problems(out: Any, problems: Sequence[Problem], limit: int = 100) -> None:
    """Each problem on its line (file, record index, byte offset, what), at most ``limit``."""
    if not problems:
        return
    out.print(f"[red]{len(problems)} problem(s):[/]")
    for p in problems[:limit]:
        out.print(f"  {p}", markup=False, soft_wrap=True)
    if len(problems) > limit:
        out.print(f"  ... and {len(problems) - limit} more (use --json for all)")


class Described(Protocol):
    """What ``info`` and ``stats`` return: a JSON form, notes and problems."""

    @property
    def notes(self) -> Sequence[str]: ...

    @property
    def problems(self) -> Sequence[Problem]: ...

    def to_json(self) -> dict[str, Any]: ...


def render(result: Described, as_json: bool, text: Callable[[Any], None]) -> int:
    """Prints ``result`` as JSON, or as ``text(console)`` followed by its notes and
    problems. Returns the exit status: 1 when there are problems."""
    code = 1 if result.problems else 0
    if as_json:
        print_json(result.to_json())
        return code
    out = console()
    text(out)
    for note in result.notes:
        out.print(f"[yellow]note:[/] {note}")
    print_problems(out, result.problems)
    return code
