"""``recordforge verify``: framing, CRCs, parsing, manifest, index and images."""

from __future__ import annotations

import argparse

from recordforge import inspect
from recordforge.cli._inspect import add_inputs, byte_progress, console, print_json, print_problems

HELP = (
    "Check every record (framing, CRCs, schema), the manifest and indexes; exit 0 if all is well."
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


def run(args: argparse.Namespace) -> int:
    with byte_progress(args.paths, "verify") as progress:
        result = inspect.verify(
            args.paths,
            images=args.images,
            checksums=not args.no_checksums,
            progress=progress,
            max_record_bytes=args.max_record_bytes,
        )
    if args.json:
        print_json(result.to_json())
        return 0 if result.ok else 1
    out = console()
    for f in result.files:
        mark = "[green]ok[/]" if not f.problems else f"[red]{f.problems} problem(s)[/]"
        out.print(f"{mark}  {f.records:>10,} records  {f.record_type:<16} {f.path}")
    print_problems(out, result.problems)
    checked = ", ".join(result.checked)
    if result.ok:
        out.print(
            f"[bold green]OK[/]: {result.records:,} records in {len(result.files)} file(s) "
            f"({result.bytes:,} bytes); checked {checked}"
        )
        return 0
    out.print(f"[bold red]FAILED[/]: {len(result.problems)} problem(s); checked {checked}")
    return 1
