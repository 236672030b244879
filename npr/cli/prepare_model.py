"""`npr prepare-model --base PATH --out PATH`: the eight tags become special tokens of an HF model and
tokenizer (new rows = the mean of each tag's sub-word rows); both are saved in HF format."""

from __future__ import annotations

import argparse
import json
import os

from npr.cli import fail


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base", required=True, help="HF model directory or hub name (the instruct model)")
    parser.add_argument("--out", required=True, help="directory to write the prepared model and tokenizer to")
    parser.add_argument("--dtype", default="auto", help="torch dtype to load and save in (default: the checkpoint's)")


def run(args: argparse.Namespace) -> int:
    from npr.errors import TagTokenError
    from npr.prepare import prepare_model

    if os.path.isdir(args.out) and os.listdir(args.out):
        return fail("prepare-model", f"--out {args.out!r} exists and is not empty: choose a new directory")
    try:
        prepared = prepare_model(args.base, args.out, dtype=args.dtype)
    except TagTokenError as err:
        return fail("prepare-model", f"{args.base}: {err}")
    except (OSError, ValueError) as err:
        return fail("prepare-model", f"cannot load --base {args.base!r}: {err}")
    print(json.dumps({"out": str(args.out), "vocab_size": prepared.vocab_size, "tag_ids": prepared.tag_ids.as_dict(),
                      "initialised_from": prepared.subword_ids}))
    return 0
