"""verl's TransferQueue agent-loop worker and manager for `npr_parallel`: for a row written by that loop the
worker hands verl NPR position ids and the structure (per-sample `multi_modal_inputs`, which verl
concatenates into the actor's model kwargs) instead of sequential positions and `{}`.

Select with `actor_rollout_ref.rollout.agent.agent_loop_manager_class:
verl_npr.agent_loop_worker.NprAgentLoopManager`. Importing this module imports Ray and verl's v1 trainer."""

from __future__ import annotations

from typing import Any

import ray
import torch
from verl.trainer.ppo.v1.agent_loop_tq import AgentLoopManagerTQ, AgentLoopWorkerTQ

from npr.layout import Layout, build_layout
from npr.schema import TagIds
from npr.wire import NPR_KEY, parse_npr_record
from verl_npr.agent_loop import check_config
from verl_npr.batch import structure_inputs


def layout_of(output: Any, tags: TagIds) -> Layout | None:
    """The Layout of an `npr_parallel` AgentLoopOutput (prompt + response, the engine's refused forks),
    or None for a row of another agent loop."""
    extra = (getattr(output, "extra_fields", None) or {}).get(NPR_KEY)
    record = parse_npr_record(extra)
    if record is None:
        return None
    return build_layout(list(output.prompt_ids) + list(output.response_ids), tags, len(output.prompt_ids),
                        refused_forks=list(record.refused_forks), max_branches=extra["max_branches"])


def scatter_positions(layout: Layout, attention_mask: torch.Tensor) -> torch.Tensor:
    """LongTensor [1, L]: the layout's positions at the attended tokens of `attention_mask` [1, L] (verl's
    TQ path passes an unpadded row of ones, its padded path left/right padding), 0 elsewhere.
    Raises ValueError when the attended count differs from the layout's length."""
    mask = attention_mask.reshape(1, -1)[0].bool()
    if int(mask.sum()) != len(layout):
        raise ValueError(f"attention_mask attends {int(mask.sum())} tokens but the layout covers {len(layout)}; "
                         "positions must come from the same prompt + response")
    positions = torch.zeros((1, mask.numel()), dtype=torch.long)
    positions[0, mask] = layout.position_ids.to(torch.long)
    return positions


class NprStructureMixin:
    """The two overrides of verl's AgentLoopWorker. verl calls `_compute_multi_modal_inputs(output,
    input_ids)` and then `_compute_position_ids(input_ids, attention_mask, multi_modal_inputs, ...)` with
    the dict the first returned; that dict (never holding position_ids) links the pair."""

    def _init_npr(self) -> None:
        self.npr_settings = check_config(self.config)
        self.npr_tags = TagIds.from_tokenizer(self.tokenizer)
        self._npr_layouts: dict[int, Layout] = {}

    def _compute_multi_modal_inputs(self, output, input_ids) -> dict[str, torch.Tensor]:
        layout = layout_of(output, self.npr_tags)
        if layout is None:
            return super()._compute_multi_modal_inputs(output, input_ids)
        if output.multi_modal_data:
            raise ValueError(f"agent loop npr_parallel is text-only; got multi-modal data {sorted(output.multi_modal_data)}")
        inputs = structure_inputs(layout)
        self._npr_layouts[id(inputs)] = layout
        return inputs

    def _compute_position_ids(self, input_ids, attention_mask, multi_modal_inputs, *args, **kwargs) -> torch.Tensor:
        layout = self._npr_layouts.pop(id(multi_modal_inputs), None)
        if layout is None:
            return super()._compute_position_ids(input_ids, attention_mask, multi_modal_inputs, *args, **kwargs)
        return scatter_positions(layout, attention_mask)


class NprAgentLoopWorkerImpl(NprStructureMixin, AgentLoopWorkerTQ.__ray_actor_class__):
    """verl's AgentLoopWorkerTQ with NPR positions and structure; checks the config when it starts."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_npr()


NprAgentLoopWorker = ray.remote(NprAgentLoopWorkerImpl)


class NprAgentLoopManager(AgentLoopManagerTQ):
    """verl's AgentLoopManagerTQ starting `NprAgentLoopWorker`s."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        check_config(self.config)
        self.agent_loop_workers_class = NprAgentLoopWorker
