"""Entry point of ``recordforge`` and ``python -m recordforge``."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from recordforge import __version__, _cli_startup
from recordforge.cli import (
    convert,
    count,
    demo,
    head,
    index,
    info,
    preview,
    salvage,
    stats,
    verify,
)
from recordforge.errors import RecordforgeError

SUBCOMMANDS = {
    "convert": convert,
    "demo": demo,
    "info": info,
    "head": head,
    "count": count,
    "verify": verify,
    "salvage": salvage,
    "index": index,
    "stats": stats,
    "preview": preview,
}


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
    argv = list(sys.argv[1:] if argv is None else argv)
    passed: list[str] = []
    if argv[:1] == ["convert"] and "--" in argv:
        # `convert ... --runner beam -- --project=p ...`: the rest is Beam's options.
        cut = argv.index("--")
        argv, passed = argv[:cut], argv[cut + 1 :]
    args = build_parser().parse_args(argv)
    args.pipeline_args = passed

    def show(message: Any, category: Any, *_: Any, **__: Any) -> None:
        print(f"recordforge {args.command}: warning: {message}", file=sys.stderr)

    _cli_startup.settle()
    try:
        with warnings.catch_warnings():
            warnings.showwarning = show
            code: int = SUBCOMMANDS[args.command].run(args)
    except KeyboardInterrupt:
        print(
            f"recordforge {args.command}: interrupted"
            + (" (rerun the same command to resume)" if args.command == "convert" else ""),
            file=sys.stderr,
        )
        return 130
    except (RecordforgeError, OSError, ValueError, ImportError) as e:
        # Errors name their file / item / record already; no traceback for bad input. An
        # ImportError names the extra to install (s3:// without s3fs, preview without Pillow).
        print(f"recordforge {args.command}: error: {e}", file=sys.stderr)
        return 1
    finally:
        _cli_startup.done()
    return code


if __name__ == "__main__":
    sys.exit(main())
