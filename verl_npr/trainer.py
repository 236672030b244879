"""verl v1 trainer mode `npr_sync`: verl's synchronous PPO trainer whose step metrics also hold the
fork-join rollout statistics of `npr_parallel` (`npr/trigger_rate`, widths, critical path vs total
tokens, valid share, reward of the valid rows). verl's v1 trainer logs no agent-loop metrics, so they
are read back from TransferQueue (`extra_fields["npr"]`) before the batch is cleared.

Registered by `register_trainer_mode()`; select with `trainer.v1.trainer_mode: npr_sync`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY, register_trainer
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

from npr.wire import NPR_KEY
from verl_npr.agent_loop import record_metrics
from verl_npr.registries import claim_name

NAME = "npr_sync"


class NprSyncTrainer(PPOTrainerSync):
    """`PPOTrainerSync` plus `npr/*` rollout metrics each step."""

    def _compute_metrics(self, batch, metrics, timing_raw, global_steps, epoch):
        super()._compute_metrics(batch, metrics, timing_raw, global_steps=global_steps, epoch=epoch)
        import transfer_queue as tq

        keep = [i for i, tag in enumerate(batch.tags) if not tag.get("is_padding", False)]
        if not keep:
            return
        keys = [batch.keys[i] for i in keep]
        data = tq.kv_batch_get(keys=keys, partition_id=batch.partition_id, select_fields=["extra_fields", "rm_scores"])
        records = [_plain(e).get(NPR_KEY) if isinstance(_plain(e), Mapping) else None
                   for e in _items(data["extra_fields"])]
        metrics.update(record_metrics([_plain(r) if r is not None else None for r in records]))
        scores = [float(s.sum()) for s in _items(data["rm_scores"])]
        valid = [s for s, r in zip(scores, records) if r is not None and _plain(r).get("is_valid")]
        if valid:
            metrics["npr/score/valid_mean"] = float(np.mean(valid))


def _items(value: Any) -> list:
    """Per-row items of a TransferQueue field: a NonTensorStack / list of objects, or a (nested) tensor."""
    if isinstance(value, torch.Tensor):
        return list(value.unbind(0))
    return list(value.tolist() if hasattr(value, "tolist") and not isinstance(value, list) else value)


def _plain(item: Any) -> Any:
    """A row's object as a plain value (NonTensorData unwrapped, a TensorDict as a dict)."""
    item = getattr(item, "data", item) if not isinstance(item, Mapping) else item
    return item.to_dict() if hasattr(item, "to_dict") and not isinstance(item, dict) else item


def register_trainer_mode() -> type[NprSyncTrainer]:
    """Register `NprSyncTrainer` as verl v1 trainer mode "npr_sync". Idempotent; raises ValueError when
    another class holds the name."""
    claim_name("trainer mode", NAME, TRAINER_REGISTRY, NprSyncTrainer,
               lambda: register_trainer(NAME)(NprSyncTrainer))
    return NprSyncTrainer
