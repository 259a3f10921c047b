"""The ``heapsnap`` command. Each area adds its subcommands from its own module."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from heapsnap import __version__
from heapsnap._malloc import tune_malloc
from heapsnap.errors import HeapsnapError


def build_parser() -> argparse.ArgumentParser:
    from heapsnap.cli import analyze, capture, demo

    parser = argparse.ArgumentParser(
        prog="heapsnap",
        description="Take V8 heap snapshots of Node.js processes and find what leaks.",
    )
    parser.add_argument("--version", action="version", version=f"heapsnap {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    capture.register(sub)
    analyze.register(sub)
    demo.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    tune_malloc()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except HeapsnapError as error:
        print(f"heapsnap: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("heapsnap: interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
