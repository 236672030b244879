"""End-to-end `npr eval` on the tiny model with the reference decoder in both modes: the JSONL, the
summary, the report with its PNG plots; a resumed run does no duplicate work (no engine call at all when
everything is done; exactly the missing samples otherwise, identical to the first run's); config and
file errors are clear; a parallel run against a server without the plugin refuses before any work."""

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from npr.eval import EvalConfig, ReferenceEngine, load_config, read_samples, run_eval
from npr.eval.config import ConfigError

RECIPES = os.path.join(os.path.dirname(__file__), "..", "..", "recipes", "eval")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    from npr.tiny import save_tiny

    return save_tiny(tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    with open(folder / "aime.jsonl", "w") as f:
        for i in range(3):
            f.write(json.dumps({"question": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n")
    with open(folder / "math500.json", "w") as f:
        json.dump([{"problem": "Compute 1+1.", "solution": "2", "answer": "2", "subject": "A", "level": 1,
                    "unique_id": "test/a/1.json"}], f)
    return folder


@pytest.fixture(scope="module")
def engine(model_path):
    return ReferenceEngine(model_path, "cpu", "float32")


class CountingEngine:
    """The engine, counting the prompts it is asked to decode."""

    def __init__(self, inner):
        self.inner, self.num_prompts = inner, 0
        self.name, self.tokenizer = inner.name, inner.tokenizer

    def check(self, mode):
        self.inner.check(mode)

    def generate(self, prompts, *args):  # the untimed warm-up
        self.num_prompts += len(prompts)
        return self.inner.generate(prompts, *args)

    def stream(self, requests, *args):
        for finished in self.inner.stream(requests, *args):
            self.num_prompts += 1
            yield finished


def _config(data, out, model_path, **kw):
    base = dict(benchmarks=[{"name": "aime25", "source": str(data / "aime.jsonl")},
                            {"name": "math500", "source": str(data / "math500.json")}],
                model=model_path, device="cpu", dtype="float32", n=2, max_new_tokens=24, script="3,5",
                pass_k=(1, 2), output_dir=str(out), progress=False)
    return EvalConfig(**{**base, **kw})


def test_end_to_end_both_modes_then_resume(engine, data, model_path, tmp_path):
    config = _config(data, tmp_path / "run", model_path)
    counting = CountingEngine(engine)
    summary = run_eval(config, engine=counting)
    records = read_samples(str(tmp_path / "run" / "samples.jsonl"))
    assert len(records) == (3 + 1) * 2 * 2 and summary["num_new_samples"] == 16
    for r in records:
        assert set(r) >= {"correct", "format_score", "widths", "critical_path_tokens", "trajectory", "seed"}
        if r["mode"] == "parallel":  # the script forces one block of 2 branches
            assert r["widths"] == [2] and r["critical_path_tokens"] < r["total_tokens"]
        else:
            assert r["widths"] == [] and r["critical_path_tokens"] == r["total_tokens"]
    results = summary["results"]
    assert results["aime25"]["parallel"]["trigger_rate"] == 1.0
    assert results["aime25"]["sequential"]["trigger_rate"] == 0.0
    assert results["aime25"]["parallel"]["num_samples"] == 6 and results["math500"]["sequential"]["num_problems"] == 1
    assert summary["speedup"]["aime25"]["num_problems"] == 3 and summary["speedup"]["aime25"]["wall_speedup"] > 0
    assert summary["sampling"]["temperature"] == 1.0 and summary["sampling"]["top_p"] == 0.7
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert on_disk["results"]["aime25"]["parallel"]["avg_at_k"] == results["aime25"]["parallel"]["avg_at_k"]
    report = (tmp_path / "run" / "report.md").read_text()
    for plot in ("accuracy", "widths", "speedup"):
        path = tmp_path / "run" / "plots" / f"{plot}.png"
        assert f"plots/{plot}.png" in report and path.read_bytes()[:8] == PNG_MAGIC
        from PIL import Image

        with Image.open(path) as image:
            assert image.size[0] > 200 and image.size[1] > 100
    assert "AIME25" in report and "50.4" in report  # next to the original's number

    # resume with nothing left: no engine call, the file unchanged
    before = (tmp_path / "run" / "samples.jsonl").read_text()
    calls_before = counting.num_prompts
    again = run_eval(config, engine=counting)
    assert counting.num_prompts == calls_before and again["num_new_samples"] == 0
    assert (tmp_path / "run" / "samples.jsonl").read_text() == before

    # a run killed after some samples: exactly the missing ones are decoded, and they equal the first run's
    lines = before.splitlines()
    (tmp_path / "run" / "samples.jsonl").write_text("\n".join(lines[:-3]) + "\n" + lines[-3][:40])  # torn line
    third = run_eval(config, engine=counting)
    assert third["num_new_samples"] == 3
    redone = read_samples(str(tmp_path / "run" / "samples.jsonl"))
    key = lambda r: (r["benchmark"], r["mode"], r["problem_id"], r["sample"])  # noqa: E731
    first = {key(r): r["trajectory"] for r in records}
    assert sorted(map(key, redone)) == sorted(first)
    for r in redone:  # the same samples; log-probs of a batch of another size differ by float rounding only
        want, got = first[key(r)], r["trajectory"]
        assert {k: v for k, v in got.items() if k != "logprobs"} == {k: v for k, v in want.items() if k != "logprobs"}
        assert max(abs(a - b) for a, b in zip(got["logprobs"], want["logprobs"])) < 1e-4


def test_more_problems_later_decodes_only_the_new_ones(engine, data, model_path, tmp_path):
    counting = CountingEngine(engine)
    small = _config(data, tmp_path / "run", model_path, modes=("sequential",),
                    benchmarks=[{"name": "aime25", "source": str(data / "aime.jsonl"), "limit": 2}])
    run_eval(small, engine=counting)
    warm = 1  # one untimed warm-up prompt per mode with work to do
    assert counting.num_prompts == 2 * 2 + warm
    bigger = _config(data, tmp_path / "run", model_path, modes=("sequential",),
                     benchmarks=[{"name": "aime25", "source": str(data / "aime.jsonl")}])
    summary = run_eval(bigger, engine=counting)
    assert counting.num_prompts == 2 * 2 + warm + 2 + warm and summary["num_new_samples"] == 2


def test_cli_with_recipe_overlay(data, model_path, tmp_path, capsys):
    from npr.cli import main

    out = tmp_path / "cli"
    code = main(["eval", "--config", os.path.join(RECIPES, "tiny_cpu.yaml"), f"model={model_path}",
                 f"output_dir={out}", "progress=false", "modes=[parallel]", "n=1",
                 f"benchmarks=[{{name: aime25, source: {data / 'aime.jsonl'}, limit: 1}}]"])
    assert code == 0, capsys.readouterr().err
    assert len(read_samples(str(out / "samples.jsonl"))) == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["top_p"] == 0.7 and summary["config"]["max_new_tokens"] == 24  # base + overlay


def test_config_errors_name_the_fix(tmp_path, capsys):
    with pytest.raises(ConfigError, match="unknown benchmark 'aime2025'"):
        load_config(overrides=["benchmarks=[aime2025]"])
    with pytest.raises(ConfigError, match="unknown key 'temprature'"):
        load_config(overrides=["benchmarks=[aime25]", "temprature=0.5"])
    with pytest.raises(ConfigError, match="modes"):
        load_config(overrides=["benchmarks=[aime25]", "modes=[fast]"])
    with pytest.raises(ConfigError, match="top_p must be in"):
        load_config(overrides=["benchmarks=[aime25]", "top_p=0"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("benchmarks: [aime25]\nmodle: x\n")
    with pytest.raises(ConfigError, match="unknown keys \\['modle'\\]"):
        load_config([str(bad)])
    from npr.cli import main

    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text(json.dumps({"prompt": "q", "target": "1"}) + "\n")
    assert main(["eval", f"benchmarks=[{{name: aime25, source: {wrong}}}]", "model=unused"]) == 2
    err = capsys.readouterr().err
    assert "npr eval: error:" in err and "(question, answer)" in err and "'prompt'" in err


class _StockServer(BaseHTTPRequestHandler):
    """What a stock SGLang server answers: server info without the plugin's "npr" entry."""

    def do_GET(self):
        body = json.dumps({"model_path": "x", "attention_backend": "fa3"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_parallel_run_against_server_without_plugin_refuses(data, model_path, tmp_path, capsys):
    from npr.cli import main

    server = HTTPServer(("127.0.0.1", 0), _StockServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        code = main(["eval", "engine=http", f"url={url}", f"model={model_path}", f"output_dir={tmp_path / 'o'}",
                     f"benchmarks=[{{name: aime25, source: {data / 'aime.jsonl'}}}]", "progress=false"])
    finally:
        server.shutdown()
    err = capsys.readouterr().err
    assert code == 2
    assert "does not run the NPR plugin" in err and "Install native-parallel-reasoner" in err
    assert read_samples(str(tmp_path / "o" / "samples.jsonl")) == []  # refused before any work


def test_parallel_mode_refuses_a_model_without_tag_tokens(tmp_path, data, capsys):
    """A Stage-1 model (tags are plain text) cannot fork: refused before any sample, naming the fix."""
    from npr.cli import main
    from npr.tiny import make_tiny_model, make_tiny_tokenizer

    tokenizer = make_tiny_tokenizer(with_tags=False)
    make_tiny_model(tokenizer, seed=0).save_pretrained(tmp_path / "stage1")
    tokenizer.save_pretrained(tmp_path / "stage1")
    out = tmp_path / "o"
    code = main(["eval", f"model={tmp_path / 'stage1'}", "device=cpu", f"output_dir={out}", "progress=false",
                 f"benchmarks=[{{name: aime25, source: {data / 'aime.jsonl'}}}]"])
    err = capsys.readouterr().err
    assert code == 2 and "parallel mode needs the eight tags as single tokens" in err and "modes=[sequential]" in err
    assert read_samples(str(out / "samples.jsonl")) == []


def test_report_states_each_speed_figure_with_its_definition(engine, data, model_path, tmp_path):
    """A scripted parallel vs sequential run at concurrency 3: time to answer, tokens/s, critical paths, the
    replay speed-up on the same outputs (the replayed ids are the parallel samples' own) and the wall ratio
    labelled as a comparison of different outputs, each in summary.json and report.md with its definition."""
    config = _config(data, tmp_path / "speed", model_path, script="3,5/4,4,6", temperature=0.0, max_new_tokens=64,
                     concurrency=3, replay=2, benchmarks=[{"name": "aime25", "source": str(data / "aime.jsonl")}])
    summary = run_eval(config, engine=engine)
    assert summary["notes"] == [] and summary["concurrency"] == 3
    records = read_samples(str(tmp_path / "speed" / "samples.jsonl"))
    parallel = [r for r in records if r["mode"] == "parallel"]
    assert all(r["concurrency"] == 3 and r["latency_s"] > 0 for r in records)
    for mode in ("parallel", "sequential"):
        m = summary["results"]["aime25"][mode]
        latencies = sorted(r["latency_s"] for r in records if r["mode"] == mode)
        assert latencies[0] <= m["time_to_answer_s"]["median"] <= m["time_to_answer_s"]["p90"] <= latencies[-1]
        assert m["tokens_per_s"] > 0 and m["samples_per_s"] > 0
    # the replay: the first 2 parallel samples, decoded again fork-join at batch 1 into the same ids, then
    # replayed sequentially over those ids (a mismatch would be a note, and no row)
    rows = [json.loads(line) for line in open(tmp_path / "speed" / "replay.jsonl")]
    assert [(r["problem_id"], r["sample"]) for r in rows] == [(r["problem_id"], r["sample"]) for r in parallel[:2]]
    for row, record in zip(rows, parallel):
        assert (row["total_tokens"], row["critical_path_tokens"]) == (record["total_tokens"],
                                                                      record["critical_path_tokens"])
    replay = summary["replay"]["aime25"]
    total, critical = sum(r["total_tokens"] for r in parallel[:2]), sum(r["critical_path_tokens"] for r in parallel[:2])
    assert replay["num_samples"] == 2 and replay["token_ratio"] == pytest.approx(total / critical)
    assert total / critical > 1.3  # the script forks: blocks of 2 and 3 branches
    assert replay["replay_speedup"] == pytest.approx(replay["sequential_s"] / replay["fork_join_s"])
    report = (tmp_path / "speed" / "report.md").read_text()
    for figure in ("time_to_answer_s", "tokens_per_s", "critical_path_tokens", "replay_speedup", "token_ratio",
                   "wall_speedup"):
        assert summary["definitions"][figure] in report
    assert "different outputs" in summary["definitions"]["wall_speedup"] and "concurrency 3" in report
    before = (tmp_path / "speed" / "replay.jsonl").read_text()
    assert run_eval(config, engine=engine)["replay"] == summary["replay"]  # resumed: nothing timed again
    assert (tmp_path / "speed" / "replay.jsonl").read_text() == before
