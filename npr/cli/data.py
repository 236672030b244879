"""`npr data --input FILE_FOLDER_OR_HUB_NAME --output OUT.parquet --data-source NAME`: problems to verl's RL
parquet layout with the parallel-schema instruction; skipped rows are listed on stderr with their index."""

from __future__ import annotations

import argparse
import json
import sys

from npr.cli import fail


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True,
                        help="local .json/.jsonl/.parquet file, a folder of them (read in file-name order), "
                             "or a hub dataset name")
    parser.add_argument("--output", required=True, help="parquet file to write")
    parser.add_argument("--data-source", required=True, help="value of the data_source column (e.g. orz, aime25)")
    parser.add_argument("--split", default="train", help="written to extra_info.split (default train)")
    parser.add_argument("--hub-split", default="train", help="split to read from a hub dataset")
    parser.add_argument("--no-instruction", action="store_true", help="no system message (plain questions)")


def run(args: argparse.Namespace) -> int:
    from npr.data import PARALLEL_INSTRUCTION, convert, read_rows, write_parquet

    try:
        raw = read_rows(args.input, args.hub_split)
    except (OSError, ValueError) as err:
        return fail("data", str(err))
    result = convert(raw, args.data_source, args.split, None if args.no_instruction else PARALLEL_INSTRUCTION)
    for index, reason in result.skipped:
        print(f"npr data: skipped row {index}: {reason}", file=sys.stderr)
    if not result.rows:
        return fail("data", f"{args.input}: no row could be converted ({len(result.skipped)} skipped)")
    write_parquet(result.rows, args.output)
    print(json.dumps({"output": args.output, "rows": len(result.rows), "skipped": len(result.skipped)}))
    return 0
