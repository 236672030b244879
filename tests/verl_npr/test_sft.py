"""Parallel SFT through verl 0.9.1's own SFT trainer on CPU (recipe npr_beta/tiny_cpu, the plugin's cpu
platform, micro-batches of 2): a few steps reduce the loss; padded and packed runs give the same loss;
the loss on branch-2 tokens (after its forced <step>, which verl scores with the logits of branch
1's last token) does not change when the sibling branch 1 is altered (and does under
transformers' causal sdpa mask); the checkpoint exports through verl's model merger to an HF model
that keeps the tag tokens."""

import json
import subprocess
import sys

import pytest

from tests.hosts import make_env, require_host, run_json

pytestmark = [pytest.mark.verl, pytest.mark.slow]
require_host("verl")


@pytest.fixture(scope="module")
def report():
    return run_json("from tests.verl_npr.sft_probe import main; main()", env={"VERL_USE_EXTERNAL_PLUGINS": None},
                    timeout=1800)


def test_a_few_steps_reduce_the_loss(report):
    losses = report["packed"]
    assert len(losses) == 3 and losses[0] > losses[1] > losses[2]


def test_padded_and_packed_give_the_same_loss(report):
    assert report["padded"][0] == pytest.approx(report["packed"][0], rel=1e-5)


def test_the_mask_isolates_sibling_branches(report):
    assert report["num_loss_tokens"] > 0 and max(report["num_branches"]) >= 2
    assert report["altered"][0] == pytest.approx(report["masked"][0], rel=1e-6)
    # negative control: with a causal mask branch 2 sees branch 1, so the same alteration moves the loss
    assert abs(report["altered_sdpa"][0] - report["masked_sdpa"][0]) > 1e-4


def test_export_with_verls_model_merger_keeps_the_tags(report, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from npr.schema import TagIds

    step = f"{report['checkpoint']}/global_step_3"
    proc = subprocess.run([sys.executable, "-m", "verl.model_merger", "merge", "--backend", "fsdp", "--local_dir",
                           step, "--target_dir", str(tmp_path / "hf")], capture_output=True, text=True, timeout=600,
                          env=make_env({"VERL_PLATFORM": "cpu", "VERL_USE_EXTERNAL_PLUGINS": None}),
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    tok = AutoTokenizer.from_pretrained(tmp_path / "hf")
    base_tok = AutoTokenizer.from_pretrained(report["model"])
    assert TagIds.from_tokenizer(tok) == TagIds.from_tokenizer(base_tok)
    load = lambda path: AutoModelForCausalLM.from_pretrained(path, attn_implementation="sdpa")  # noqa: E731
    merged, base = load(tmp_path / "hf"), load(report["model"])
    saved = load(f"{step}/huggingface")  # verl's own hf_model copy (its config names the attention "npr")
    assert merged.get_input_embeddings().weight.shape == base.get_input_embeddings().weight.shape
    merged_state, saved_state, base_state = merged.state_dict(), saved.state_dict(), base.state_dict()
    for name, value in merged_state.items():
        assert (value == saved_state[name]).all(), name
    assert any(not (value == base_state[name]).all() for name, value in merged_state.items())  # it trained
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["vocab_size"] == base.config.vocab_size
