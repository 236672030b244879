"""Trainer/engine consistency through verl 0.9.1's real `ActorRolloutRefWorker(role="actor")` (cpu
platform, fsdp2, gloo, world size 1, fp32): for reference-decoder trajectories of different lengths
and widths, built into verl's fields by `verl_npr.batch`, compute_log_prob equals the decoder's
log-probs with use_remove_padding True (packed) and False (padded); transformers' own masks (the
attention "sdpa") miss by nats; one `npr_papo` update gives the hand-computed loss and grad norm."""

import json

import pytest

from tests.hosts import require_host, run_python

pytestmark = [pytest.mark.verl, pytest.mark.slow]
require_host("verl")

TOL = 1e-5


@pytest.fixture(scope="module")
def report():
    proc = run_python("from tests.verl_npr.actor_probe import main; main()",
                      env={"VERL_PLATFORM": "cpu", "VERL_USE_EXTERNAL_PLUGINS": None}, timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 0 and lines, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return json.loads(lines[-1])


def test_the_batch_has_different_lengths_and_widths(report):
    assert len(set(report["lengths"])) == len(report["lengths"])
    assert sorted(set(report["widths"])) == [1, 2, 3]
    assert report["valid"] == [True, True, True, False]


@pytest.mark.parametrize("mode", ["packed", "padded"])
def test_actor_log_probs_equal_the_decoders(report, mode):
    assert report[f"max_diff_{mode}"] <= TOL
    shapes = report[f"input_shapes_{mode}"]
    if mode == "packed":  # micro-batches of 2 sequences in one row each
        assert all(rows == 1 for rows, _ in shapes)
    else:
        assert all(rows == 2 for rows, _ in shapes)


def test_dynamic_batch_size_regrouping_keeps_each_samples_structure(report):
    assert report["max_diff_packed_dynamic_bsz"] <= TOL


@pytest.mark.parametrize("mode", ["packed", "padded"])
def test_masks_built_by_transformers_are_wrong_for_branches(report, mode):
    assert report[f"sdpa_max_diff_{mode}"] > 0.5


def test_papo_update_matches_the_hand_computation(report):
    metrics = report["verl_metrics"]
    assert metrics["actor/pg_loss"] == pytest.approx(report["hand_loss"], rel=1e-5, abs=1e-7)
    assert metrics["grad_norm"] == pytest.approx(report["hand_grad_norm"], rel=1e-5)
