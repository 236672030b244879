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
    assert "'<guideline>' ->" in err and "add_special_tokens" in err


def test_generate_bad_script_spec(model_dir):
    with pytest.raises(SystemExit, match="branch lengths"):
        main(["generate", "--model", model_dir, "--prompt", "hi", "--script", "a,b"])


def test_demo_checks_consistency(capsys):
    assert main(["demo", "--json"]) == 0
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
