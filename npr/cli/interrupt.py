"""Ctrl-C in a subcommand: one line instead of a KeyboardInterrupt traceback, exit status 130 (128 + SIGINT).
The resumable ones (`npr sample`, `npr eval`) say how many records their append-only JSONL keeps and that
rerunning the same command resumes from there."""

from __future__ import annotations

import argparse
import json
import os
import sys

EXIT_INTERRUPTED = 130


def records_file(command: str, args: argparse.Namespace) -> str | None:
    """The append-only records file of a resumable subcommand's run, or None."""
    if command == "sample":
        return os.path.join(args.out, "records.jsonl")
    if command == "eval":
        from npr.eval.config import load_config
        from npr.eval.runner import SAMPLES_FILE

        try:
            return os.path.join(load_config(args.config, args.overrides).output_dir, SAMPLES_FILE)
        except Exception:  # noqa: BLE001 - a bad config never got as far as writing records
            return None
    return None


def count_records(path: str) -> int:
    """Complete records (lines that parse as JSON) of a JSONL file; a torn last line is not one."""
    if not os.path.exists(path):
        return 0
    count = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                json.loads(line)
            except ValueError:
                continue
            count += 1
    return count


def report_interrupt(command: str, args: argparse.Namespace) -> int:
    """Print what an interrupted subcommand leaves behind (stderr); returns EXIT_INTERRUPTED."""
    path = records_file(command, args)
    if path is None:
        print(f"npr {command}: interrupted", file=sys.stderr)
    else:
        print(f"npr {command}: interrupted, {count_records(path)} records kept in {path}, rerun to resume",
              file=sys.stderr)
    return EXIT_INTERRUPTED
