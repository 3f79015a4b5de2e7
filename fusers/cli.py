"""The ``c2c`` command line.

Each subcommand lives in ``fusers/commands/<name>.py`` with ``register(subparsers)``;
heavy imports (torch, transformers) happen inside the commands, so ``c2c --help``
is instant. Errors print one readable line and exit non-zero; ``--debug`` shows
the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from .errors import C2CError, describe

COMMANDS = ("compare", "serve", "fuser", "train", "demo", "specialist")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="c2c",
        description="Cache-to-cache (C2C) communication between two LLMs: compare text relay and cache fusion, "
        "inspect, convert, download and train fusers.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"fusers.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"fusers.commands.{name}":
                continue  # a command not shipped in this build
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # accepted anywhere, not only before the subcommand
    parser = build_parser()
    args = parser.parse_args([a for a in argv if a != "--debug"])
    args.debug = debug
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("\ncancelled", file=sys.stderr)
        return 130
    except C2CError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # an engine bug or a library failure: still one readable line
        if args.debug:
            raise
        print(f"error: {describe(exc)} (run `c2c --debug ...` for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
