"""verl v1 trainer mode `npr_sync`: verl's synchronous PPO trainer whose step metrics also hold the
fork-join rollout statistics of `npr_parallel` (`npr/trigger_rate`, widths, critical path vs total
tokens, valid share, reward of the valid rows). verl's v1 trainer logs no agent-loop metrics, so they
are read back from TransferQueue (`extra_fields["npr"]`) before the batch is cleared.

Registered by `register_trainer_mode()`; select with `trainer.v1.trainer_mode: npr_sync`."""

from __future__ import annotations

import threading

import numpy as np
from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY, register_trainer
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

from sglang_npr.protocol import NPR_KEY
from verl_npr.agent_loop import record_metrics

NAME = "npr_sync"
_LOCK = threading.Lock()


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
        extra = [getattr(item, "data", item) for item in data["extra_fields"].tolist()]
        records = [e.get(NPR_KEY) if isinstance(e, dict) else None for e in extra]
        metrics.update(record_metrics(records))
        scores = [float(s.sum()) for s in data["rm_scores"].unbind(0)]
        valid = [s for s, r in zip(scores, records) if isinstance(r, dict) and r.get("is_valid")]
        if valid:
            metrics["npr/score/valid_mean"] = float(np.mean(valid))


def register_trainer_mode() -> type[NprSyncTrainer]:
    """Register `NprSyncTrainer` as verl v1 trainer mode "npr_sync". Idempotent; raises ValueError when
    another class holds the name."""
    with _LOCK:
        existing = TRAINER_REGISTRY.get(NAME)
        if existing is not None and existing is not NprSyncTrainer:
            raise ValueError(f"verl trainer mode {NAME!r} is already registered by {existing!r}; uninstall the "
                             "other plugin or pick another name")
        if existing is None:
            register_trainer(NAME)(NprSyncTrainer)
    return NprSyncTrainer
