"""`npr inspect FILE`: one evaluated response as a readable tree in the terminal, and optionally as a
standalone HTML page with the branches of each block side by side (--html OUT.html)."""

from __future__ import annotations

import argparse

from npr.cli import fail


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="samples.jsonl of `npr eval` (or one JSON record with a \"text\")")
    parser.add_argument("--index", type=int, default=0, help="which matching record (default 0; -1 = last)")
    parser.add_argument("--benchmark", help="keep records of this benchmark")
    parser.add_argument("--problem", help="keep records of this problem id")
    parser.add_argument("--sample", help="keep records of this sample index")
    parser.add_argument("--mode", choices=["parallel", "sequential"], help="keep records of this mode")
    parser.add_argument("--html", metavar="OUT", help="also write a standalone HTML page here")
    parser.add_argument("--width", type=int, default=100, help="characters per line of the tree")


def run(args: argparse.Namespace) -> int:
    from npr.view import ViewError, load_record, render_html, render_terminal

    select = {k: v for k, v in (("benchmark", args.benchmark), ("problem_id", args.problem),
                                ("sample", args.sample), ("mode", args.mode)) if v is not None}
    try:
        record = load_record(args.file, args.index, select)
    except ViewError as err:
        return fail("inspect", str(err))
    print(render_terminal(record, args.width))
    if args.html:
        try:
            with open(args.html, "w", encoding="utf-8") as f:
                f.write(render_html(record))
        except OSError as err:
            return fail("inspect", f"--html {args.html}: cannot write it ({err.strerror})")
        print(f"wrote {args.html}")
    return 0
