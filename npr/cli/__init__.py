"""The `npr` console script: one subcommand per module of this package (doctor, demo, generate, ...)."""

from __future__ import annotations

import argparse
import importlib
import sys

from npr.loading import InputError

# subcommand -> module under npr.cli that defines add_arguments(parser) and run(args) -> int
SUBCOMMANDS = {
    "doctor": "Check the installation: versions, host plugins discoverable and loaded.",
    "demo": "Run the embedded default end to end on a tiny in-memory model and show the structure.",
    "generate": "Fork-join decoding of a prompt with any HF causal LM; prints the answer and the block tree.",
    "eval": "Evaluate a model on benchmarks: accuracy, parallel trigger rate, widths, speed-up over sequential.",
    "inspect": "Show one evaluated response as a tree (terminal) or a standalone HTML page (--html).",
    "prepare-model": "Add the eight tags as special tokens to an HF model and tokenizer (Stage 2) and save them.",
    "data": "Convert ORZ / AIME / MATH500-style problem files to verl's RL parquet layout.",
    "sample": "Rejection sampling (keep correct AND perfectly formatted) into an SFT dataset of canonical ids.",
}
# Subcommands that need a host live in that host's plugin and are found through this entry-point group
# (name -> module with add_arguments/run; its docstring's first line is the help), so `npr` itself
# never imports verl_npr or sglang_npr.
PLUGIN_GROUP = "npr.commands"


def plugin_commands() -> dict[str, str]:
    """name -> module of the subcommands host plugins register (read from metadata, nothing imported)."""
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group=PLUGIN_GROUP) if ep.name not in SUBCOMMANDS}


def _module_of(name: str, plugins: dict[str, str]) -> str:
    return plugins.get(name, f"npr.cli.{name.replace('-', '_')}")


def make_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Every subcommand is listed, but only `command`'s module is imported: `npr doctor` must work
    when another subcommand's dependencies are broken, since diagnosing that is its job."""
    parser = argparse.ArgumentParser(prog="npr", description="native-parallel-reasoner command line.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    plugins = plugin_commands()
    helps = {**SUBCOMMANDS, **{name: f"(from {module.split('.')[0]})" for name, module in plugins.items()}}
    for name, help_text in helps.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            importlib.import_module(_module_of(name, plugins)).add_arguments(sub_parser)
    return parser


# A bad input a subcommand found after parsing: reported with `fail` (`npr <cmd>: error: ...`, exit 2). The
# library (npr.loading) raises the same class, so every `except CliError` catches its errors.
CliError = InputError


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
    try:
        module = importlib.import_module(_module_of(args.command, plugin_commands()))
        return int(module.run(args) or 0)
    except KeyboardInterrupt:  # Ctrl-C: what is kept and how to resume, not a traceback
        from npr.cli.interrupt import report_interrupt

        return report_interrupt(args.command, args)


if __name__ == "__main__":
    sys.exit(main())
