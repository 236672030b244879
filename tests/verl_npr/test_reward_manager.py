"""The `npr` reward manager through real verl 0.9: found by name after `import verl` in a fresh process,
and a batch scored through it equals `reward.compute_score` on the same texts."""

import asyncio
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.verl,
    pytest.mark.skipif(importlib.util.find_spec("verl") is None, reason="verl is not installed"),
]

CASES = json.loads((Path(__file__).parents[1] / "data" / "reward_format_cases.json").read_text())["cases"]
TEXTS = {c["name"]: "\n".join(c["lines"]) for c in CASES}
BATCH = [  # (response text, ground truth, extra_info)
    (TEXTS["perfect"], "42", {}),
    (TEXTS["perfect"], "\\frac{84}{3}", {}),
    (TEXTS["perfect_two_blocks"], "42.0", {"index": 1}),
    (TEXTS["no_block"], "42", {}),
    (TEXTS["polluted_step"], "42", {}),
    (TEXTS["unclosed_block_truncated"], "42", {}),
    (TEXTS["perfect"].replace("\\boxed{42}", "\\boxed{B}"), "B", {"options": ["41", "42"]}),
    ("", "42", {}),
]


def test_found_by_name_after_import_verl_in_a_fresh_process():
    code = (
        "import verl\n"
        "from verl.experimental.reward_loop.reward_manager import get_reward_manager_cls\n"
        "cls = get_reward_manager_cls('npr')\n"
        "print(cls.__module__ + '.' + cls.__qualname__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "verl_npr.reward_manager.NprRewardManager"


@pytest.fixture(scope="module")
def registered():
    import verl_npr
    from verl_npr.reward_manager import NprRewardManager, register_reward_manager

    verl_npr.register()
    assert register_reward_manager() is NprRewardManager  # idempotent
    return NprRewardManager


def test_register_is_idempotent_and_refuses_a_clash(registered, monkeypatch):
    from verl.experimental.reward_loop.reward_manager import get_reward_manager_cls
    from verl.experimental.reward_loop.reward_manager.registry import REWARD_MANAGER

    from verl_npr.reward_manager import register_reward_manager

    register_reward_manager()
    assert get_reward_manager_cls("npr") is registered
    monkeypatch.setitem(REWARD_MANAGER, "npr", object)
    with pytest.raises(ValueError, match="already registered"):
        register_reward_manager()


def _batch(tokenizer):
    """A DataProto as verl's agent loop hands it to a reward manager: left-padded prompts, right-padded
    responses ending in EOS."""
    import numpy as np
    import torch
    from verl import DataProto

    prompt = tokenizer.encode("Solve it.", add_special_tokens=False)
    responses = [tokenizer.encode(text, add_special_tokens=False) + [tokenizer.eos_token_id] for text, _, _ in BATCH]
    width = max(len(r) for r in responses)
    pad = tokenizer.pad_token_id
    response_ids = torch.tensor([r + [pad] * (width - len(r)) for r in responses])
    response_mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in responses])
    prompts = torch.tensor([prompt] * len(BATCH))
    return DataProto.from_dict(
        tensors={
            "prompts": prompts,
            "responses": response_ids,
            "input_ids": torch.cat([prompts, response_ids], dim=1),
            "attention_mask": torch.cat([torch.ones_like(prompts), response_mask], dim=1),
        },
        non_tensors={
            "data_source": np.array(["math"] * len(BATCH), dtype=object),
            "reward_model": np.array([{"ground_truth": gt} for _, gt, _ in BATCH], dtype=object),
            "extra_info": np.array([dict(info) for _, _, info in BATCH], dtype=object),
        },
    )


def _config(stage=None, custom=None):
    from omegaconf import OmegaConf

    return OmegaConf.create({"reward": {
        "custom_reward_function": {"path": custom and "pkg://reward", "name": custom or "compute_score",
                                   "reward_kwargs": {}},
        "reward_manager": {"source": "register", "name": "npr"},
        "reward_kwargs": {"stage": stage} if stage else {},
    }})


def _score_through_verl(config, tokenizer):
    from verl.trainer.ppo.reward import load_reward_manager

    data = _batch(tokenizer)

    async def run():
        manager = load_reward_manager(config, tokenizer)  # built on the running loop, as in a worker
        outputs = await asyncio.gather(*(manager.run_single(data[i:i + 1]) for i in range(len(data))))
        scores = [o["reward_score"] for o in outputs]
        return manager, outputs, manager.assemble_rm_scores(data, scores)

    return asyncio.run(run())


@pytest.mark.parametrize("with_tags", [True, False], ids=["stage3-special-tags", "stage1-text-tags"])
@pytest.mark.parametrize("stage", ["zero", "papo"])
def test_batch_through_verl_equals_compute_score(registered, with_tags, stage):
    from npr.tiny import make_tiny_tokenizer

    import reward

    tokenizer = make_tiny_tokenizer(with_tags=with_tags)
    manager, outputs, rm_scores = _score_through_verl(_config(stage), tokenizer)
    assert type(manager) is registered
    for (text, gt, info), output in zip(BATCH, outputs):
        direct = reward.compute_score("math", text, gt, dict(info), stage=stage)
        assert output["reward_score"] == direct["score"]
        assert output["reward_extra_info"] == direct
    # verl puts each score on the last valid response token
    assert rm_scores.sum(dim=1).tolist() == pytest.approx([o["reward_score"] for o in outputs])


def test_decoding_keeps_tags_and_drops_other_special_tokens(registered):
    from npr.tiny import make_tiny_tokenizer

    tokenizer = make_tiny_tokenizer(with_tags=True)
    manager = registered(_config("papo"), tokenizer, None)
    text = TEXTS["perfect"]
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert len(ids) < len(text) / 2 and tokenizer.convert_tokens_to_ids("<step>") in ids
    wrapped = [tokenizer.convert_tokens_to_ids("<|im_start|>")] + ids + [tokenizer.eos_token_id, tokenizer.pad_token_id]
    assert manager.decode_response(wrapped) == text


def test_custom_reward_function_path_wins(registered):
    from npr.tiny import make_tiny_tokenizer

    import reward

    tokenizer = make_tiny_tokenizer(with_tags=True)
    _, outputs, _ = _score_through_verl(_config(stage="zero", custom="compute_score_papo"), tokenizer)
    expected = [reward.compute_score_papo("math", text, gt, dict(info))["score"] for text, gt, info in BATCH]
    assert [o["reward_score"] for o in outputs] == expected
