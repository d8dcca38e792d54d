"""Entry point of ``recordforge`` and ``python -m recordforge``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from recordforge import __version__
from recordforge.cli import demo

SUBCOMMANDS = {"demo": demo}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recordforge",
        description="Convert datasets to sharded TFRecord files and read them back.",
    )
    parser.add_argument("--version", action="version", version=f"recordforge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module in SUBCOMMANDS.items():
        module.add_parser(sub.add_parser(name, help=module.HELP, description=module.HELP))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = SUBCOMMANDS[args.command].run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
