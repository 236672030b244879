"""The `npr` console script: one subcommand per module of this package (doctor, demo, generate, ...)."""

from __future__ import annotations

import argparse
import importlib
import sys

from npr.schema import NprError

# subcommand -> module under npr.cli that defines add_arguments(parser) and run(args) -> int
SUBCOMMANDS = {
    "doctor": "Check the installation: versions, host plugins discoverable and loaded.",
    "demo": "Run the embedded default end to end on a tiny in-memory model and show the structure.",
    "generate": "Fork-join decoding of a prompt with any HF causal LM; prints the answer and the block tree.",
}


def make_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Every subcommand is listed, but only `command`'s module is imported: `npr doctor` must work
    when another subcommand's dependencies are broken, since diagnosing that is its job."""
    parser = argparse.ArgumentParser(prog="npr", description="native-parallel-reasoner command line.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            importlib.import_module(f"npr.cli.{name}").add_arguments(sub_parser)
    return parser


class CliError(NprError, ValueError):
    """A bad input a subcommand found after parsing: reported with `fail` (`npr <cmd>: error: ...`, exit 2)."""


def fail(command: str | None, message: str) -> int:
    """Report a bad input the way argparse does (`npr <cmd>: error: ...` on stderr); returns exit code 2."""
    print(f"npr {command}: error: {message}" if command else f"npr: error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # the top-level parser has no options of its own, so the first word is the subcommand
    command = next((word for word in argv if not word.startswith("-")), None)
    for word in argv:
        try:
            word.encode("utf-8")
        except UnicodeEncodeError:  # bytes in another encoding, decoded by Python with surrogate escapes
            return fail(command if command in SUBCOMMANDS else None, f"argument {word!r} is not valid UTF-8: "
                        "pass arguments in UTF-8 (e.g. with LANG=C.UTF-8 in the shell)")
    parser = make_parser(command)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    module = importlib.import_module(f"npr.cli.{args.command}")
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
