"""The ``heapsnap`` command. Each area adds its subcommands from its own module."""

from __future__ import annotations

import argparse
import gc
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from heapsnap import __version__
from heapsnap._malloc import tune_malloc
from heapsnap.cli._signals import Stopped, raise_on_stop_signals
from heapsnap.errors import HeapsnapError


def build_parser() -> argparse.ArgumentParser:
    from heapsnap.cli import allocations, analyze, capture, demo, redact

    parser = argparse.ArgumentParser(
        prog="heapsnap",
        description="Take V8 heap snapshots of Node.js processes and find what leaks.",
    )
    parser.add_argument("--version", action="version", version=f"heapsnap {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    capture.register(sub)
    allocations.register(sub)
    analyze.register(sub)
    demo.register(sub)
    redact.register(sub)
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
    except Stopped as stopped:
        print(f"heapsnap: stopped by {stopped.name}", file=sys.stderr)
        return stopped.exit_code
    except KeyboardInterrupt:
        print("heapsnap: interrupted", file=sys.stderr)
        return 130
    return code


def exit_after(command: Callable[[], int]) -> NoReturn:
    """Run a console command and end the process with its exit code, without the
    interpreter's last collection walking every object about to go with the process
    (botocore's models, numpy: 0.09 s after a capture, measured). SIGTERM and SIGHUP
    stop the command with its clean-up, as Ctrl-C does."""
    raise_on_stop_signals()
    code = command()
    gc.freeze()
    sys.exit(code)


def entry() -> NoReturn:
    """The ``heapsnap`` console script."""
    exit_after(main)


if __name__ == "__main__":
    entry()
