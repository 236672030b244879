"""The `npr` console script: one subcommand per module of this package (doctor, demo, generate, ...)."""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> module under npr.cli that defines add_arguments(parser) and run(args) -> int
SUBCOMMANDS = {
    "doctor": "Check the installation: versions, host plugins discoverable and loaded.",
    "demo": "Run the embedded default end to end on a tiny in-memory model and show the structure.",
    "generate": "Fork-join decoding of a prompt with any HF causal LM; prints the answer and the block tree.",
}


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="npr", description="native-parallel-reasoner command line.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in SUBCOMMANDS.items():
        module = importlib.import_module(f"npr.cli.{name}")
        module.add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    module = importlib.import_module(f"npr.cli.{args.command}")
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
