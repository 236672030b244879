"""verl's real `ActorRolloutRefWorker(role="actor")` driven in this process: one rank over gloo, fp32,
fsdp2, attention `npr`, by default on the plugin's cpu platform. The config is verl's own `ppo_trainer`
plus the NPR settings; batches are verl DataProtos (`verl_npr.batch.make_data_proto`). `npr demo`, the
actor consistency probe and the structured-attention benchmark drive the actor through these functions.

Call `setup_env()` before verl is first imported: verl picks its platform then."""

from __future__ import annotations

import os
from typing import Any, Sequence

ACTOR = "actor_rollout_ref.actor"


def setup_env(platform: str = "cpu", port: int | None = None) -> None:
    """verl's platform (VERL_PLATFORM) and a one-rank torch.distributed rendezvous, unless already set."""
    os.environ.setdefault("VERL_PLATFORM", platform)
    defaults = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port or 29500 + os.getpid() % 1000), "RANK": "0",
                "WORLD_SIZE": "1", "LOCAL_RANK": "0"}
    for key, value in defaults.items():
        os.environ.setdefault(key, value)


def actor_config(model_dir: str, mini_batch_size: int, micro_batch_size: int, *, lr: float = 1e-6,
                 clip_grad: float = 1.0, use_remove_padding: bool = True, overrides: Sequence[str] = ()):
    """The composed ppo_trainer config: the actor on model_dir with attention `npr` and the `npr_papo` loss
    (token-mean, no KL, no entropy), fp32 fsdp2 without torch.compile, on the cpu device; `overrides`
    (Hydra strings) go last, e.g. an optimizer schedule."""
    from hydra import compose, initialize_config_module
    from omegaconf import open_dict

    base = [
        f"actor_rollout_ref.model.path={model_dir}",
        "+actor_rollout_ref.model.override_config.attn_implementation=npr",
        "actor_rollout_ref.model.enable_gradient_checkpointing=false",
        f"{ACTOR}.strategy=fsdp2",
        f"{ACTOR}.fsdp_config.dtype=float32",
        f"+{ACTOR}.fsdp_config.mixed_precision={{param_dtype: fp32, reduce_dtype: fp32, buffer_dtype: fp32}}",
        f"{ACTOR}.use_torch_compile=false",
        f"{ACTOR}.ppo_mini_batch_size={mini_batch_size}",
        f"{ACTOR}.ppo_micro_batch_size_per_gpu={micro_batch_size}",
        f"{ACTOR}.policy_loss.loss_mode=npr_papo",
        f"{ACTOR}.loss_agg_mode=token-mean",
        f"{ACTOR}.use_kl_loss=false",
        f"{ACTOR}.entropy_coeff=0",
        f"{ACTOR}.optim.lr={lr}",
        f"{ACTOR}.optim.clip_grad={clip_grad}",
        f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={micro_batch_size}",
        "actor_rollout_ref.rollout.n=1",
        "trainer.device=cpu",
    ]
    with initialize_config_module(config_module="verl.trainer.config", version_base=None):
        config = compose(config_name="ppo_trainer", overrides=base + list(overrides))
    with open_dict(config):
        config.actor_rollout_ref.model.use_remove_padding = use_remove_padding
    return config


def make_worker(config):
    """The actor worker of `config`, its model and optimizer built (joins a one-rank gloo group)."""
    import torch.distributed as dist
    from verl.workers.engine_workers import ActorRolloutRefWorker

    if not dist.is_initialized():
        dist.init_process_group("gloo", rank=0, world_size=1)
    worker = ActorRolloutRefWorker(config.actor_rollout_ref, role="actor")
    worker.init_model()
    return worker


def to_tensordict(data, **meta):
    """A DataProto as the TensorDict the worker takes (padding removed), with `meta` as non-tensor fields."""
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils.padding import left_right_2_no_padding

    data.meta_info["temperature"] = 1.0
    td = left_right_2_no_padding(data.to_tensordict())
    tu.assign_non_tensor(td, **meta)
    return td


def actor_log_probs(worker, data, use_remove_padding: bool, max_token_len: int | None = None):
    """[B, R] float32 log-probs of verl's compute_log_prob, padded back with verl's own helper.
    max_token_len switches on verl's dynamic batch size (micro-batches regrouped by token count)."""
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils.padding import no_padding_2_padding

    dynamic = {} if max_token_len is None else {"use_dynamic_bsz": True, "max_token_len_per_gpu": max_token_len}
    td = to_tensordict(data.select(deepcopy=True), calculate_entropy=False, compute_loss=False,
                       use_remove_padding=use_remove_padding, **dynamic)
    return no_padding_2_padding(tu.get(worker.compute_log_prob(td), "log_probs"), td).float()


def update(worker, data, advantages, old_log_probs, seed: int, use_remove_padding: bool) -> dict[str, Any]:
    """One optimizer step of the actor's loss on the whole batch (one mini-batch, one epoch, no shuffle).
    Returns verl's metrics, a one-element list unwrapped to its value."""
    from verl.utils import tensordict_utils as tu

    data.batch["advantages"] = advantages
    data.batch["old_log_probs"] = old_log_probs
    size = len(data)
    td = to_tensordict(data, calculate_entropy=False, global_batch_size=size, mini_batch_size=size, epochs=1,
                       seed=seed, dataloader_kwargs={"shuffle": False}, compute_loss=True,
                       use_remove_padding=use_remove_padding)
    metrics = tu.get(worker.update_actor(td), "metrics")
    return {k: v[0] if isinstance(v, list) and len(v) == 1 else v for k, v in metrics.items()}


def set_lr(worker, lr: float) -> None:
    """The learning rate of the next update (verl's scheduler sets its own after each step)."""
    for group in worker.actor.engine.optimizer.param_groups:
        group["lr"] = lr


def actor_state(worker) -> dict[str, Any]:
    """The actor's full parameters (fsdp2 on one rank) as plain tensors, keyed as the HF model's."""
    state = worker.actor.engine.module.state_dict()
    return {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().clone() for k, v in state.items()}
