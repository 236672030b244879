"""`npr generate` and `npr demo`: real model loading from a path, tree and JSON output, clean errors."""

import json

import pytest

from npr.cli import main
from npr.tiny import make_tiny_model, make_tiny_tokenizer, save_tiny


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("tiny-npr"))


def test_generate_json_from_a_saved_model(model_dir, capsys):
    assert main(["generate", "--model", model_dir, "--prompt", "What is 2+2?", "--script", "2,3/1,1,1",
                 "--dtype", "float64", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["finish_reason"] == "stop" and out["is_valid"]
    assert out["stats"]["num_forks"] == 2 and out["stats"]["max_width"] == 3
    blocks = [p for p in out["parts"] if p["kind"] == "block"]
    assert [len(b["branches"]) for b in blocks] == [2, 3]
    assert [b["num_tokens"] for b in blocks[0]["branches"]] == [4 + 2 + 1, 4 + 3 + 1]
    assert blocks[0]["branches"][1]["text"].startswith("<step>\n2:")
    assert len(out["token_ids"]) == len(out["logprobs"]) == out["stats"]["total_tokens"]


def test_generate_tree_output(model_dir, capsys):
    assert main(["generate", "--model", model_dir, "--prompt", "hi", "--script", "3,1", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "block 1: 2 parallel steps" in text and "step 2 [6 tokens, closed]" in text
    assert "finish: stop" in text and "answer:" in text


def test_generate_sequential_flag_never_forks(model_dir, capsys):
    assert main(["generate", "--model", model_dir, "--prompt", "hi", "--script", "3,1", "--sequential",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["stats"]["num_forks"] == 0
    assert any("parallel decoding is off" in n for n in out["notes"])


def test_generate_names_the_fix_when_tags_are_not_tokens(tmp_path, capsys):
    tok = make_tiny_tokenizer(with_tags=False)
    make_tiny_model(tok).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    assert main(["generate", "--model", str(tmp_path), "--prompt", "hi"]) == 2
    err = capsys.readouterr().err
    assert "'<guideline>' ->" in err and "npr prepare-model" in err


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `npr ARGV`, whether it returns or exits as argparse does."""
    try:
        rc = main(list(argv))
    except SystemExit as exc:
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


def assert_usage_error(rc: int, err: str, command: str, *fragments: str) -> None:
    """argparse style: exit code 2, one `npr <cmd>: error: ...` line, no traceback."""
    assert rc == 2 and "Traceback" not in err, err
    line = next(line for line in err.splitlines() if line.startswith(f"npr {command}: error: "))
    for fragment in fragments:
        assert fragment in line, (fragment, line)


@pytest.mark.parametrize("command", ["generate", "demo"])
@pytest.mark.parametrize("spec", ["-1,2", "a,b", "3,,5", "2/", "1.5"])
def test_bad_script_specs_are_usage_errors(model_dir, capsys, command, spec):
    extra = ["--model", model_dir, "--prompt", "hi"] if command == "generate" else []
    rc, _, err = cli(capsys, command, *extra, f"--script={spec}")
    assert_usage_error(rc, err, command, "argument --script", repr(spec), "'3,5/4,4,6'")


def test_demo_without_a_script_says_so(capsys):
    rc, out, _ = cli(capsys, "demo", "--quick", "--script", "", "--prompt", "hi")
    assert rc == 0 and "no script" in out and "forced by" not in out
    rc, out, _ = cli(capsys, "demo", "--quick", "--script", "2,1")
    assert rc == 0 and "structure forced by the script '2,1'" in out


@pytest.mark.parametrize("argv, fragments", [
    (["--prompt", "", "--no-chat-template"], ["prompt encodes to no tokens", "--no-chat-template"]),
    (["--prompt", "hi", "--temperature", "inf"], ["temperature must be a finite number", "inf"]),
    (["--prompt", "hi", "--temperature", "nan"], ["temperature must be a finite number", "nan"]),
    (["--prompt", "hi", "--top-p", "nan"], ["top_p", "nan"]),
    (["--prompt", "hi", "--max-new-tokens", "0"], ["max_new_tokens", "0"]),
    (["--prompt", "hi", "--device", "foo"], ["--device 'foo' is not a device", "cpu, cuda"]),
    (["--prompt", "bad \udcff bytes"], ["not valid UTF-8", "\\udcff"]),
])
def test_generate_bad_inputs_are_usage_errors(model_dir, capsys, argv, fragments):
    argv = [a.replace("\\udcff", "\udcff") for a in argv]  # a surrogate: how Python decodes non-UTF-8 argv
    rc, _, err = cli(capsys, "generate", "--model", model_dir, *argv)
    assert_usage_error(rc, err, "generate", *fragments)


def test_sampling_params_refuse_non_finite_values():
    from npr.decoding import SamplingParams

    for bad in (float("inf"), float("nan"), -1.0):
        with pytest.raises(ValueError, match="temperature must be a finite number"):
            SamplingParams(temperature=bad)
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=float("nan"))


def test_generate_cuda_without_cuda_names_the_fix(model_dir, capsys):
    import torch

    device = "cuda:99" if torch.cuda.is_available() else "cuda"
    rc, _, err = cli(capsys, "generate", "--model", model_dir, "--prompt", "hi", "--device", device)
    assert_usage_error(rc, err, "generate", f"--device {device}", "cuda" if torch.cuda.is_available() else "--device cpu")


def test_generate_ids_outside_the_embedding_table(tmp_path, capsys):
    tok = make_tiny_tokenizer()
    model = make_tiny_model(tok)
    model.resize_token_embeddings(16)  # a tokenizer grown without resizing the model
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    rc, _, err = cli(capsys, "generate", "--model", str(tmp_path), "--prompt", "hi")
    assert_usage_error(rc, err, "generate", "outside the model's embedding table (16 rows", "resize_token_embeddings")


def test_generate_missing_model_folder(tmp_path, capsys):
    missing = str(tmp_path / "no" / "model")
    rc, _, err = cli(capsys, "generate", "--model", missing, "--prompt", "hi")
    assert_usage_error(rc, err, "generate", missing, "no such folder", "save_tiny")
    assert "Repo id" not in err


def test_generate_model_folder_without_tokenizer(tmp_path, capsys):
    make_tiny_model(make_tiny_tokenizer()).save_pretrained(tmp_path)
    rc, _, err = cli(capsys, "generate", "--model", str(tmp_path), "--prompt", "hi")
    assert_usage_error(rc, err, "generate", "has no tokenizer", "tokenizer.save_pretrained")
    assert "tags" not in err


@pytest.mark.parametrize("text, line", [
    ("<takeaway>t</takeaway>\nSo \\boxed{42}.<|im_end|>", "answer: 42"),
    ("\\boxed{1}<takeaway>t</takeaway> the answer is 7<|im_end|>", "answer: 7  (from an 'answer is' phrase"),
    ("<takeaway>\\boxed{1}</takeaway> no box<|im_end|>", "answer: none"),
])
def test_answer_line_is_the_rewards_answer(text, line):
    from npr.cli.generate import answer_line, answer_text

    assert answer_line(answer_text(text, make_tiny_tokenizer())).startswith(line)


def test_generate_json_carries_the_extracted_answer(model_dir, capsys):
    rc, out, _ = cli(capsys, "generate", "--model", model_dir, "--prompt", "hi", "--script", "1,1", "--json")
    out = json.loads(out)
    assert rc == 0 and "answer" in out and "<|im_end|>" not in (out["answer"] or "")


def test_demo_checks_consistency(capsys):
    assert main(["demo", "--quick", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["max_logprob_gap"] < 1e-9 and out["stats"]["num_forks"] == 2


def test_host_subcommands_come_from_plugin_entry_points(monkeypatch, tmp_path, capsys):
    """A plugin registers a subcommand in the `npr.commands` group; `npr` lists it without importing
    it and imports it only when it runs."""
    import sys
    from importlib.metadata import EntryPoint

    import npr.cli as cli

    (tmp_path / "fake_host_cmd.py").write_text(
        "def add_arguments(parser):\n    parser.add_argument('--n', type=int, default=1)\n"
        "def run(args):\n    print('ran', args.n)\n    return 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    point = EntryPoint(name="fakecmd", value="fake_host_cmd", group=cli.PLUGIN_GROUP)
    monkeypatch.setattr("importlib.metadata.entry_points",
                        lambda group=None: [point] if group == cli.PLUGIN_GROUP else [])
    parser = cli.make_parser(None)
    assert "fakecmd" in parser.format_help() and "fake_host_cmd" not in sys.modules
    assert cli.main(["fakecmd", "--n", "3"]) == 0
    assert capsys.readouterr().out.strip() == "ran 3"
