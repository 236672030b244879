"""Rejection sampling with the reference decoder on the tiny model under a scripted structure: acceptance
follows the rule (correct AND format score 0), an interrupted run resumes without duplicates and gives
the records of an uninterrupted one, and the SFT rows hold the canonical ids of the same content."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from npr.cli import main
from npr.cli.sample import reward_judge
from npr.data import convert, write_parquet
from npr.decoding import Decoder, DecodingConfig, ScriptedStructure
from npr.layout import build_layout
from npr.rejection import ReferenceEngine, RejectionSampler, load_problems, read_records, sft_rows
from npr.templates import Templates
from npr.text import parse_text
from npr.tiny import make_tiny_model, make_tiny_tokenizer, save_tiny
from reward import format_score, grade

QUESTIONS = [("What is 6*7?", "42"), ("What is 3+4?", "7"), ("Twice 21?", "42"), ("Half of 84?", "42")]


class ForceAnswer:
    """Test processor: after the last scripted </takeaway>, the trunk writes ' \\boxed{42}'."""

    def __init__(self, tokenizer, close: int):
        self.answer = tokenizer.encode(" \\boxed{42}", add_special_tokens=False)
        self.close = close
        self.num_blocks = 1

    def __call__(self, seq, logits):
        if seq.branch != 0 or seq.tokens.count(self.close) < self.num_blocks:
            return logits
        k = len(seq.tokens) - 1 - max(i for i, t in enumerate(seq.tokens) if t == self.close)
        if k >= len(self.answer):
            return logits
        out = torch.full_like(logits, float("-inf"))
        out[self.answer[k]] = 0.0
        return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("sample")
    write_parquet(convert([{"question": q, "answer": a} for q, a in QUESTIONS], "toy", instruction=None).rows,
                  root / "data.parquet")
    tok = make_tiny_tokenizer()
    decoder = Decoder(make_tiny_model(tok), tok, DecodingConfig(max_new_tokens=128))
    force = ForceAnswer(tok, decoder.templates.tags.takeaway_close)
    problems, skipped = load_problems(str(root / "data.parquet"))
    assert skipped == [] and len(problems) == 4

    def sampler(lengths):
        script = ScriptedStructure(lengths, answer_tokens=len(force.answer))
        force.num_blocks = len(lengths)
        return RejectionSampler(ReferenceEngine(decoder, 1.0, script, [force]), reward_judge, tok, num_trials=3)

    return root, tok, problems, sampler


def test_acceptance_follows_the_rule(setup):
    root, tok, problems, sampler = setup
    summary = sampler([[2, 3]]).run(problems, str(root / "good" / "records.jsonl"), progress=False)
    bad = sampler([[0, 3]]).run(problems, str(root / "bad" / "records.jsonl"), progress=False)  # empty step 1
    seen = set()
    for folder in ("good", "bad"):
        records, notes = read_records(str(root / folder / "records.jsonl"))
        assert notes == [] and len(records) == 4
        for record in records.values():
            assert len(record["trials"]) == 3
            for trial in record["trials"]:
                correct = grade(trial["text"], record["ground_truth"])
                score, _ = format_score(trial["text"])
                assert trial["is_kept"] == (correct and score == 0)
                seen.add((correct, score == 0))
    assert seen == {(True, True), (False, True), (True, False), (False, False)}
    assert (summary.num_trials, summary.num_kept, summary.num_problems_kept) == (12, 9, 3)
    assert summary.acceptance_rate == 0.75
    assert (bad.num_kept, bad.num_format_ok, bad.num_correct) == (0, 0, 9)


def test_interrupted_run_resumes_without_duplicates(setup):
    root, tok, problems, sampler = setup
    whole = root / "whole" / "records.jsonl"
    sampler([[2, 3]]).run(problems, str(whole), progress=False)
    part = root / "part" / "records.jsonl"
    first = sampler([[2, 3]]).run(problems, str(part), progress=False, stop=lambda n: n >= 7)
    assert first.num_problems == 3 and first.num_incomplete == 1  # 2 problems whole, the third has 1 trial
    with open(part, "a") as f:
        f.write('{"problem_id": "cut sho')  # an interrupted write
    resumed = sampler([[2, 3]]).run(problems, str(part), progress=False)
    assert resumed.num_resumed == 2 and resumed.num_problems == 4 and resumed.num_new_trials == 12 - 7
    assert any("unreadable record ignored" in n for n in resumed.notes)
    keys = [(json.loads(line)["problem_id"], json.loads(line)["trial"]) for line in open(part)
            if line.startswith('{"problem_id": "') and line.endswith("}\n")]
    assert len(keys) == len(set(keys)) == 12
    again = sampler([[2, 3]]).run(problems, str(part), progress=False)
    assert again.num_resumed == 4 and again.num_new_trials == 0  # nothing left to sample
    assert read_records(str(part))[0] == read_records(str(whole))[0]  # same samples as one uninterrupted run


def test_concurrency_gives_the_records_of_one_at_a_time(setup):
    """Trial j of a problem samples from its own seed: 5 trials in flight across problems give, trial by
    trial, what one at a time gives."""
    root, tok, problems, sampler = setup
    one = sampler([[2, 3]]).run(problems, str(root / "c1" / "records.jsonl"), progress=False)
    wide = sampler([[2, 3]])
    wide.concurrency = 5
    many = wide.run(problems, str(root / "c5" / "records.jsonl"), progress=False)
    assert read_records(str(root / "c5" / "records.jsonl"))[0] == read_records(str(root / "c1" / "records.jsonl"))[0]
    assert (many.num_trials, many.num_kept) == (one.num_trials, one.num_kept)
    texts = [t["text"] for r in read_records(str(root / "c1" / "records.jsonl"))[0].values() for t in r["trials"]]
    assert len(set(texts)) > 1  # the trials differ (a negative control: equal records are not all one text)


def test_sft_rows_hold_canonical_ids(setup):
    root, tok, problems, sampler = setup
    records = str(root / "canon" / "records.jsonl")
    summary = sampler([[2, 3], [1, 2, 2]]).run(problems, records, progress=False)
    rows = sft_rows(records, tok, summary=summary)
    assert len(rows) == summary.num_kept == summary.num_sft_rows > 0 and summary.dropped == []
    t = Templates.from_tokenizer(tok)
    for row in rows:
        text = row["messages"][-1]["content"]
        parsed = parse_text(text)
        assert parsed.is_valid and len(parsed.blocks) == 2
        expected = []
        for block in parsed.blocks:
            steps = [s.split(":", 1)[1] for s in block.steps]  # strip the "\n{i}:" header
            expected += t.block_ids(block.plans, steps, block.takeaway)
        expected += t.encode(parsed.final) + [tok.eos_token_id]
        assert row["response_ids"] == expected
        prompt = tok.apply_chat_template(row["messages"][:-1], add_generation_prompt=True, tokenize=True)
        assert row["prompt_ids"] == list(prompt["input_ids"] if hasattr(prompt, "keys") else prompt)
        assert build_layout(row["prompt_ids"] + row["response_ids"], t.tags, len(row["prompt_ids"])).is_valid


def test_invalid_conversions_are_reported_and_dropped(setup, tmp_path):
    root, tok, problems, _ = setup
    record = {"problem_id": "p1", "data_source": "toy", "prompt": [{"role": "user", "content": "q"}],
              "ground_truth": "42", "trials": [  # a whole problem per line: the format of older runs
                  {"text": "<guideline><plan>a</plan></guideline>", "is_kept": True},  # block left open
                  {"text": "no blocks \\boxed{42}", "is_kept": True}]}
    (tmp_path / "r.jsonl").write_text(json.dumps(record) + "\n")
    from npr.rejection import Summary

    summary = Summary()
    rows = sft_rows(str(tmp_path / "r.jsonl"), tok, summary=summary)
    assert [r["trial"] for r in rows] == [1]
    assert len(summary.dropped) == 1 and summary.dropped[0].startswith("p1 trial 0:")


def test_sample_cli_end_to_end(setup, tmp_path, capsys):
    root, *_ = setup
    model = save_tiny(tmp_path / "model")
    argv = ["sample", "--data", str(root / "data.parquet"), "--model", model, "--out", str(tmp_path / "out"),
            "--num-trials", "2", "--script", "1,2", "--max-new-tokens", "64", "--device", "cpu", "--quiet"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["num_problems"] == 4 and summary["num_trials"] == 8
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["num_trials"] == 8
    sft = pd.read_parquet(tmp_path / "out" / "sft.parquet")
    assert len(sft) == summary["num_kept"] == summary["num_sft_rows"]
    assert main(argv) == 0  # resumes: nothing new is sampled
    assert json.loads(capsys.readouterr().out)["num_resumed"] == 4
    assert main(argv[:-1] + ["--num-trials", "0"]) == 2


def test_a_folder_of_prepared_files_reads_as_its_files(setup, tmp_path):
    root, *_ = setup
    (tmp_path / "parts").mkdir()
    rows = pd.read_parquet(root / "data.parquet")
    rows.iloc[:2].to_parquet(tmp_path / "parts" / "a.parquet")
    rows.iloc[2:].to_parquet(tmp_path / "parts" / "b.parquet")
    assert load_problems(str(tmp_path / "parts")) == load_problems(str(root / "data.parquet"))
