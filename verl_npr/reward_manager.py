"""verl reward manager `npr` (verl 0.9 reward loop): decodes each response with the schema tags kept
(they are special tokens after Stage 2) and scores it with `reward.compute_score`.

Registered by `register_reward_manager()`, which `verl_npr.register()` calls; importing this module
imports verl but registers nothing. Select it with `reward.reward_manager.name: npr`. The stage and
other reward settings come from `reward.reward_kwargs` ({stage, timeout_s, max_branches}) unless a
`reward.custom_reward_function` is configured, which then wins.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from verl import DataProto
from verl.experimental.reward_loop.reward_manager import NaiveRewardManager, register
from verl.experimental.reward_loop.reward_manager.registry import REWARD_MANAGER
from verl.utils.reward_score import default_compute_score

import reward
from npr.schema import TAG_STRINGS
from verl_npr.registries import claim_name

NAME = "npr"
REWARD_KWARGS = ("stage", "timeout_s", "max_branches")  # read from config.reward.reward_kwargs


def reward_kwargs_from_config(config: Any) -> dict[str, Any]:
    """Our reward settings from `config.reward.reward_kwargs` (missing keys are left to defaults)."""
    try:
        raw = config.reward.get("reward_kwargs", None) or {}
    except AttributeError:
        return {}
    return {key: raw[key] for key in REWARD_KWARGS if key in raw and raw[key] is not None}


class NprRewardManager(NaiveRewardManager):
    """NaiveRewardManager with NPR decoding (tags kept, other special tokens dropped) and NPR's reward
    as the default scoring function (`reward.compute_score`, stage from `reward.reward_kwargs`)."""

    def __init__(self, config, tokenizer, compute_score=None, reward_router_address=None,
                 reward_model_tokenizer=None):
        if compute_score is None or compute_score is default_compute_score:
            compute_score = functools.partial(reward.compute_score, **reward_kwargs_from_config(config))
        super().__init__(config, tokenizer, compute_score, reward_router_address, reward_model_tokenizer)
        self.is_async_reward_score = inspect.iscoroutinefunction(self.compute_score)
        self.dropped_ids = dropped_special_ids(tokenizer)

    def decode_response(self, token_ids: Any) -> str:
        """Text of a response: special tokens dropped (EOS, pad, chat markers) except the schema tags."""
        ids = token_ids.tolist() if hasattr(token_ids, "tolist") else list(token_ids)
        ids = [i for i in ids if i not in self.dropped_ids]
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    async def run_single(self, data: DataProto) -> dict:
        data_item = data[-1:][0]  # multi-output agent loops: score the last output, as verl's managers do
        response_ids = data_item.batch["responses"]
        response_length = response_ids.shape[-1]
        valid_length = int(data_item.batch["attention_mask"][-response_length:].sum())
        valid_ids = response_ids[:valid_length]

        non_tensor = data_item.non_tensor_batch
        data_source = non_tensor.get("data_source", "unknown")
        ground_truth = non_tensor["reward_model"]["ground_truth"]
        extra_info = dict(non_tensor.get("extra_info", None) or {})
        extra_info.update((non_tensor.get("tool_extra_fields", None) or {}).items())
        extra_info["num_turns"] = non_tensor.get("__num_turns__", None)

        response_str = await self.loop.run_in_executor(None, lambda: self.decode_response(valid_ids))
        kwargs = dict(data_source=data_source, solution_str=response_str, ground_truth=ground_truth,
                      extra_info=extra_info)
        if self.reward_router_address is not None:
            kwargs.update(reward_router_address=self.reward_router_address,
                          reward_model_tokenizer=self.reward_model_tokenizer)
        if self.is_async_reward_score:
            result = await self.compute_score(**kwargs)
        else:
            result = await self.loop.run_in_executor(None, lambda: self.compute_score(**kwargs))

        if isinstance(result, dict):
            return {"reward_score": result["score"], "reward_extra_info": dict(result)}
        return {"reward_score": result, "reward_extra_info": {"acc": result}}


def dropped_special_ids(tokenizer: Any) -> frozenset[int]:
    """Ids of the tokenizer's special tokens that are not schema tags (EOS, pad, chat markers)."""
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    special = set(getattr(tokenizer, "all_special_ids", None) or [])
    special.update(i for i, tok in added.items() if getattr(tok, "special", False))
    tag_ids = {i for i, tok in added.items() if str(getattr(tok, "content", tok)) in TAG_STRINGS}
    return frozenset(special - tag_ids)


def register_reward_manager() -> type[NprRewardManager]:
    """Register `NprRewardManager` as "npr" in verl's reward-loop registry. Idempotent.

    Raises ValueError when another class already holds the name "npr".
    """
    claim_name("reward manager", NAME, REWARD_MANAGER, NprRewardManager, lambda: register(NAME)(NprRewardManager))
    return NprRewardManager
