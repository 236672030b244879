"""`npr data`: ORZ pairs, AIME-style JSONL and MATH500-style JSON -> verl's RL parquet; malformed rows are
reported with their index and skipped; the output loads in verl's RLHFDataset and renders through the
tokenizer's chat template."""

from __future__ import annotations

import json
import os

import pytest

from npr.cli import main
from npr.data import PARALLEL_INSTRUCTION, convert, problem_id, read_rows
from npr.schema import TAG_STRINGS
from npr.tiny import make_tiny_tokenizer

SHARED = "/work/shared/data/benchmarks"

ORZ = [
    [{"from": "human", "value": "What is 1+1?"}, {"from": "assistant", "ground_truth": {"value": "2"}}],
    [{"value": "Name the answer."}, {"ground_truth": {}}],  # 1: no value
    [{"value": "   "}, {"ground_truth": {"value": "3"}}],  # 2: empty question
    "not a pair",  # 3
    [{"value": "Compute 6*7."}, {"ground_truth": {"value": 42}}],
]


def _write(tmp_path):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "orz.json").write_text(json.dumps(ORZ))
    lines = [json.dumps({"question": "Find x if 2x=10.", "answer": "5"}), "{broken json",
             json.dumps({"question": "No answer here"}), json.dumps({"question": "Half of 3?", "answer": 1.5})]
    (tmp_path / "aime.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "math500.json").write_text(json.dumps([
        {"problem": "Convert 0.5 to a fraction.", "solution": "...", "answer": "\\frac{1}{2}", "level": 1},
        {"problem": "Bad answer", "answer": float("nan")},
        {"problem": "AMC-like", "answer": 27.0}]))


def test_convert_reports_bad_rows_with_index_and_keeps_good_ones(tmp_path):
    _write(tmp_path)
    orz = convert(read_rows(str(tmp_path / "orz.json")), "orz")
    assert [i for i, _ in orz.skipped] == [1, 2, 3]
    assert "ground_truth.value" in orz.skipped[0][1] and "empty" in orz.skipped[1][1]
    assert [r["reward_model"]["ground_truth"] for r in orz.rows] == ["2", "42"]
    row = orz.rows[1]
    assert row["prompt"] == [{"role": "system", "content": PARALLEL_INSTRUCTION},
                             {"role": "user", "content": "Compute 6*7."}]
    assert row["data_source"] == "orz" and row["reward_model"]["style"] == "rule"
    assert row["extra_info"] == {"index": 1, "source_index": 4, "split": "train",
                                 "problem_id": problem_id("orz", "Compute 6*7."), "question": "Compute 6*7."}
    aime = convert(read_rows(str(tmp_path / "aime.jsonl")), "aime", split="test")
    assert [i for i, _ in aime.skipped] == [1, 2] and "no answer field" in aime.skipped[1][1]
    assert [r["reward_model"]["ground_truth"] for r in aime.rows] == ["5", "1.5"]
    math500 = convert(read_rows(str(tmp_path / "math500.json")), "math500")
    assert [i for i, _ in math500.skipped] == [1] and "not finite" in math500.skipped[0][1]
    assert [r["reward_model"]["ground_truth"] for r in math500.rows] == ["\\frac{1}{2}", "27"]


def test_instruction_describes_the_schema():
    for tag in TAG_STRINGS:
        assert tag in PARALLEL_INSTRUCTION
    assert "\\boxed{" in PARALLEL_INSTRUCTION and "\n1:" in PARALLEL_INSTRUCTION


def test_data_cli_writes_parquet_and_lists_skipped_rows(tmp_path, capsys):
    _write(tmp_path)
    out = tmp_path / "out" / "orz.parquet"
    assert main(["data", "--input", str(tmp_path / "orz.json"), "--output", str(out), "--data-source", "orz"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"output": str(out), "rows": 2, "skipped": 3}
    assert "skipped row 1:" in captured.err and "skipped row 3:" in captured.err
    assert main(["data", "--input", str(tmp_path / "nope.json"), "--output", str(out), "--data-source", "x"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_a_folder_reads_as_its_files_in_name_order(tmp_path, capsys):
    _write(tmp_path / "in")
    files = ["aime.jsonl", "math500.json", "orz.json"]
    assert read_rows(str(tmp_path / "in")) == [row for f in files for row in read_rows(str(tmp_path / "in" / f))]
    out = tmp_path / "out.parquet"
    assert main(["data", "--input", str(tmp_path / "in"), "--output", str(out), "--data-source", "mix"]) == 0
    assert json.loads(capsys.readouterr().out) == {"output": str(out), "rows": 2 + 2 + 2, "skipped": 2 + 1 + 3}
    (tmp_path / "empty").mkdir()
    assert main(["data", "--input", str(tmp_path / "empty"), "--output", str(out), "--data-source", "x"]) == 2
    assert "holds no .json, .jsonl, .parquet file" in capsys.readouterr().err


@pytest.mark.skipif(not os.path.isdir(SHARED), reason="shared benchmark files absent")
def test_real_benchmark_files_convert_without_skips():
    for path, count in [("AIME25/aime2025-I.jsonl", 15), ("MATH500/math500.json", 500), ("AMC23/amc23.json", 40)]:
        result = convert(read_rows(os.path.join(SHARED, path)), "bench")
        assert (len(result.rows), result.skipped) == (count, [])


@pytest.mark.verl
def test_output_loads_in_verls_rl_dataset_and_renders(tmp_path):
    pytest.importorskip("verl")
    from omegaconf import OmegaConf
    from verl.utils.dataset.rl_dataset import RLHFDataset

    _write(tmp_path)
    paths = []
    for name, source in [("orz.json", "orz"), ("aime.jsonl", "aime"), ("math500.json", "math500")]:
        paths.append(str(tmp_path / f"{source}.parquet"))
        assert main(["data", "--input", str(tmp_path / name), "--output", paths[-1], "--data-source", source]) == 0
    tok = make_tiny_tokenizer(with_tags=False)
    config = OmegaConf.create({"prompt_key": "prompt", "max_prompt_length": 4096, "filter_overlong_prompts": True,
                               "cache_dir": str(tmp_path / "cache")})
    dataset = RLHFDataset(paths, tok, config)
    assert len(dataset) == 2 + 2 + 2
    item = dataset[0]
    assert item["data_source"] == "orz" and item["reward_model"]["ground_truth"] == "2"
    text = tok.apply_chat_template(item["raw_prompt"], add_generation_prompt=True, tokenize=False)
    assert PARALLEL_INSTRUCTION in text and "What is 1+1?" in text and text.endswith("<|im_start|>assistant\n")
