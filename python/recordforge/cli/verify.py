"""``recordforge verify``: framing, CRCs, parsing, manifest, index and images."""

from __future__ import annotations

import argparse

from recordforge import inspect
from recordforge.cli._inspect import add_inputs, byte_progress, console, print_json, print_problems

HELP = (
    "Check every record (framing, CRCs, schema), the manifest and indexes; exit 0 if all is "
    "well, 1 on a problem, 3 (--fast) when nothing is wrong but some checksums could not "
    "be checked."
)


def add_parser(parser: argparse.ArgumentParser) -> None:
    add_inputs(parser)
    parser.add_argument(
        "--images",
        action="store_true",
        help="decode every image fully (JPEGs by libjpeg-turbo, its warnings counting as "
        "damage) and check that its bytes are of the schema's format",
    )
    parser.add_argument(
        "--no-checksums",
        action="store_true",
        help="skip the shard checksums (CRC32C or SHA-256) against dataset.json",
    )
    parser.add_argument(
        "--fast",
        action="store_true",
        help="read no record: check each shard's size and checksum against dataset.json, "
        "a remote shard's by the CRC32C its store keeps (GCS; S3 objects uploaded with a "
        "CRC32C), without downloading it; shards whose store keeps none are named, their "
        "sizes only checked (exit status 3)",
    )


def run(args: argparse.Namespace) -> int:
    with byte_progress(args.paths, "verify") as progress:
        result = inspect.verify(
            args.paths,
            images=args.images,
            checksums=not args.no_checksums,
            fast=args.fast,
            progress=progress,
            max_record_bytes=args.max_record_bytes,
        )
    # 3: nothing wrong found, but not all that was asked for could be checked.
    code = (0 if result.complete else 3) if result.ok else 1
    if args.json:
        print_json(result.to_json())
        return code
    out = console()
    unchecked = {p.file for p in result.unchecked}
    for f in result.files:
        mark = "[green]ok[/]" if not f.problems else f"[red]{f.problems} problem(s)[/]"
        if not f.problems and f.path in unchecked:
            mark = "[yellow]size only[/]"
        out.print(f"{mark}  {f.records:>10,} records  {f.record_type:<16} {f.path}")
    print_problems(out, result.problems)
    for p in result.unchecked:
        out.print(f"not checked: {p}", markup=False, style="yellow", soft_wrap=True)
    checked = ", ".join(result.checked)
    if result.ok and not result.complete:
        out.print(
            f"[bold yellow]INCOMPLETE[/]: no problem found, but the checksums of "
            f"{len(result.unchecked)} file(s) were NOT checked (sizes only); checked {checked}"
        )
        return code
    if result.ok:
        out.print(
            f"[bold green]OK[/]: {result.records:,} records in {len(result.files)} file(s) "
            f"({result.bytes:,} bytes); checked {checked}"
        )
        return 0
    out.print(f"[bold red]FAILED[/]: {len(result.problems)} problem(s); checked {checked}")
    return 1
