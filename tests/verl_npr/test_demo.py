"""`npr demo --fast`: the whole pipeline in miniature (synthetic digit sums, a tiny model prepared by
npr.prepare, Stage 2 and Stage 3 through verl's actor on the cpu platform, evaluation by npr.eval),
run as a user runs it, in a fresh interpreter; the assertions read the report it writes."""

import json
import sys

import pytest

from tests.hosts import require_host, run_python

pytestmark = [pytest.mark.verl, pytest.mark.slow, pytest.mark.hosts]
require_host("verl")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    proc = run_python(f"import sys; from npr.cli import main; sys.exit(main(['demo', '--fast', '--output-dir', {str(out)!r}]))",
                      env={"VERL_USE_EXTERNAL_PLUGINS": None}, timeout=600)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-4000:]}"
    return out, json.loads((out / "report.json").read_text()), proc.stdout


def test_every_phase_ran_and_wrote_its_outputs(demo):
    out, report, stdout = demo
    assert [r["phase"] for r in report["rows"]] == ["untrained", "after SFT", "after PAPO"]
    for name in ("summary.md", "report.json", "trajectory.html", "plots/demo.png", "test.jsonl",
                 "eval/after_sft/summary.json", "eval/after_papo/samples.jsonl", "model-papo/config.json"):
        assert (out / name).exists(), name
    assert "| phase | accuracy |" in stdout and "after PAPO" in stdout


def test_the_untrained_model_never_forks_or_answers(demo):
    _, report, _ = demo
    untrained = report["rows"][0]
    assert untrained["accuracy"] == 0 and untrained["trigger_rate"] == 0


def test_stage2_through_verls_actor_lowers_the_loss(demo):
    _, report, _ = demo
    log = report["sft"]["log"]
    assert report["sft"]["steps"] >= 5 and len(log) >= 1
    assert log[-1]["nll"] < 0.8 * log[0]["nll"] or log[-1]["nll"] < 2.0


def test_engine_log_probs_agree_with_the_trainers_on_its_own_rollouts(demo):
    _, report, _ = demo
    assert report["papo"] and report["max_logprob_gap"] < 1e-4
