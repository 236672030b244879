"""`npr demo --fast`: the whole pipeline in miniature (keyed digit sums, a tiny model prepared by
npr.prepare, Stage 2 and Stage 3 through verl's actor on the cpu platform, evaluation by npr.eval),
run as a user runs it, in a fresh interpreter, with each engine (the reference decoder; SGLang's real
engine with the NPR plugin); the assertions read the report and files it writes."""

import json
import random

import pytest

from tests.hosts import host_unusable_reason, require_host, run_python

pytestmark = [pytest.mark.verl, pytest.mark.slow, pytest.mark.hosts]
require_host("verl")


@pytest.fixture(scope="module", params=["reference", "sglang"])
def demo(request, tmp_path_factory):
    engine = request.param
    if engine == "sglang" and host_unusable_reason("sglang"):
        require_host("sglang")  # skips (or fails under NPR_REQUIRE_HOSTS=1) with the reason
    out = tmp_path_factory.mktemp(f"demo-{engine}") / "out"
    argv = ["demo", "--fast", "--engine", engine, "--output-dir", str(out)]
    proc = run_python(f"import sys; from npr.cli import main; sys.exit(main({argv!r}))",
                      env={"VERL_USE_EXTERNAL_PLUGINS": None}, timeout=900)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-4000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-4000:]
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["engine"] == engine
    return out, report, proc.stdout


def test_every_phase_ran_and_wrote_its_outputs(demo):
    out, report, stdout = demo
    assert [r["phase"] for r in report["rows"]] == ["untrained", "after SFT", "after PAPO"]
    for name in ("summary.md", "report.json", "trajectory.html", "plots/demo.png", "test.jsonl",
                 "eval/after_sft/summary.json", "eval/after_papo/samples.jsonl", "model-sft/config.json",
                 "model-papo/model.safetensors"):
        assert (out / name).exists(), name
    assert "| phase | accuracy (parallel) |" in stdout and "after PAPO" in stdout and "└─" in stdout


def test_the_untrained_model_never_forks_or_answers(demo):
    _, report, _ = demo
    untrained = report["rows"][0]
    assert untrained["accuracy"] == 0 and untrained["trigger_rate"] == 0


def test_sft_learns_the_task_and_every_output_forks_at_least_twice(demo):
    """After Stage 2 (200 verl actor updates) the held-out accuracy is far above the untrained model's and
    every held-out response uses the parallel schema with width >= 2."""
    _, report, _ = demo
    untrained, after_sft, after_papo = report["rows"]
    assert after_sft["accuracy"] >= untrained["accuracy"] + 0.3
    assert after_sft["trigger_rate"] == 1.0 and after_papo["trigger_rate"] == 1.0
    widths = report["after_sft_widths"]
    assert len(widths) == report["config"]["num_test"]
    assert all(w and min(w) >= 2 for w in widths)
    log = report["sft"]["log"]
    assert [e["step"] for e in log][:2] == [1, 25] and log[-1]["step"] == report["config"]["sft_steps"]
    assert log[-1]["nll"] < 0.2 * log[0]["nll"]


def test_engine_log_probs_agree_with_the_actors_on_its_own_rollouts(demo):
    _, report, _ = demo
    assert len(report["papo"]) == report["config"]["papo_steps"] >= 1
    assert all(r["rollouts"] == report["config"]["papo_prompts"] * report["config"]["papo_group"]
               for r in report["papo"])
    assert report["max_logprob_gap"] < 1e-4


def test_parallel_decoding_is_shorter_on_the_critical_path(demo):
    _, report, _ = demo
    """The critical path is shorter than the total, and the speed-up measurement replayed the same tokens
    sequentially (it raises otherwise) for the held-out problems it names."""
    after_sft = report["rows"][1]
    assert after_sft["critical_path"] < after_sft["tokens"]
    latency = after_sft["latency"]
    assert latency["problems"] >= 1 and latency["fork_join_s"] > 0 and latency["sequential_s"] > 0
    assert latency["ideal"] > 1


def test_the_held_out_split_is_never_trained_on():
    from verl_npr.demo import FAST, DemoConfig, make_test_split, train_problems

    cfg = DemoConfig(**FAST)
    test = make_test_split(cfg)
    held_out = {p["question"] for p in test}
    assert len(held_out) == cfg.num_test
    train = train_problems(random.Random(0), cfg, held_out, 2000)
    assert not held_out & {p["question"] for p in train}


@pytest.mark.parametrize("cfg", [{}, {"min_numbers": 4, "max_numbers": 6, "chunk_size": 2}])
def test_gold_trajectories_are_valid_parallel_blocks_with_correct_sums(cfg):
    """Every gold solution is a valid layout whose plans, steps and takeaway add up to the answer."""
    from npr.templates import Templates
    from npr.tiny import make_tiny_tokenizer
    from verl_npr.demo import DemoConfig, gold_sample, make_problem

    config = DemoConfig(**cfg)
    tokenizer = make_tiny_tokenizer()
    templates = Templates.from_tokenizer(tokenizer)
    rng = random.Random(1)
    for _ in range(50):
        p = make_problem(rng, config)
        digits = [int(word[1:]) for word in p["question"].split()[1:]]
        assert config.min_numbers <= len(digits) <= config.max_numbers
        assert int(p["answer"]) == sum(digits)
        assert 2 <= len(p["plans"]) == len(p["steps"]) <= 5
        partial = [int(step.split("=")[-1]) for step in p["steps"]]
        assert sum(partial) == int(p["answer"]) and p["takeaway"].endswith(f"={p['answer']}")
        sample = gold_sample(templates, tokenizer, p)
        assert sample.layout.is_valid and sample.layout.num_forks == 1


def test_bad_settings_name_the_value_and_the_fix():
    from verl_npr.demo import DemoConfig

    with pytest.raises(ValueError, match="engine must be 'reference' or 'sglang', got 'vllm'"):
        DemoConfig(engine="vllm")
    with pytest.raises(ValueError, match="give 1-2 plans; the demo needs 2-5"):
        DemoConfig(min_numbers=3, max_numbers=6, chunk_size=3)
    with pytest.raises(ValueError, match="papo_group >= 2"):
        DemoConfig(papo_group=1)


def test_the_cli_reports_a_bad_setting_before_any_work(tmp_path):
    proc = run_python("import sys; from npr.cli import main; "
                      f"sys.exit(main(['demo', '--sft-steps', '0', '--output-dir', {str(tmp_path / 'out')!r}]))",
                      env={"VERL_USE_EXTERNAL_PLUGINS": None}, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "npr demo: error: sft_steps must be >= 1, got 0" in proc.stderr
    assert not (tmp_path / "out").exists()
