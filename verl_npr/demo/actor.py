"""The demo's model and trainer: a tiny random Qwen3 given the tag tokens by `npr.prepare`, and verl's real
actor (`verl_npr.local_actor`: fsdp2, the plugin's cpu platform, attention `npr`, the `npr_papo` loss,
verl's cosine schedule) driven in this process."""

from __future__ import annotations

from verl_npr.demo.config import DemoConfig

# verl's padded path: the packed one (use_remove_padding) computes float32 log-probs without flash-attn
# in a Python loop over rows in verl 0.9.1, several times slower on a CPU
USE_REMOVE_PADDING = False


def make_model(cfg: DemoConfig, path: str):
    """A tiny random Qwen3 + byte-level BPE tokenizer made locally, given the tags by npr.prepare, saved."""
    from npr.prepare import prepare_tokenizer_and_model
    from npr.tiny import make_tiny_model, make_tiny_tokenizer

    tokenizer = make_tiny_tokenizer(with_tags=False)
    model = make_tiny_model(tokenizer, seed=cfg.seed, hidden_size=cfg.hidden_size, intermediate_size=2 * cfg.hidden_size,
                            num_hidden_layers=cfg.num_layers, head_dim=cfg.hidden_size // 4, initializer_range=0.02)
    prepared = prepare_tokenizer_and_model(tokenizer, model)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return prepared



def make_worker(model_dir: str, cfg: DemoConfig, micro_batch: int):
    """verl's actor on model_dir (constant learning-rate schedule: each phase sets its own rate per update,
    `sft_lr_at` for SFT, the stage's rate for RL)."""
    from verl_npr.local_actor import actor_config
    from verl_npr.local_actor import make_worker as make

    return make(actor_config(model_dir, cfg.sft_batch, micro_batch, lr=cfg.sft_lr, clip_grad=1.0,
                             use_remove_padding=USE_REMOVE_PADDING))


def sft_lr_at(step: int, total: int, peak: float, cfg: DemoConfig) -> float:
    """SFT's rate at update `step` (1-based) of `total`: linear warm-up over sft_warmup updates, then cosine
    down to a tenth of `peak` (the shape of verl's cosine schedule)."""
    import math

    warmup = min(cfg.sft_warmup, max(total - 1, 0))
    if step <= warmup:
        return peak * step / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def actor_log_probs(worker, data):
    from verl_npr.local_actor import actor_log_probs as log_probs

    return log_probs(worker, data, use_remove_padding=USE_REMOVE_PADDING)


def update(worker, data, advantages, old_log_probs, step: int) -> dict[str, float]:
    """One actor update with the npr_papo loss on the whole batch: its loss, grad norm and learning rate."""
    from verl_npr.local_actor import update as step_actor

    metrics = step_actor(worker, data, advantages, old_log_probs, seed=step, use_remove_padding=USE_REMOVE_PADDING)
    out = {}
    for key in ("actor/pg_loss", "actor/grad_norm", "actor/lr"):
        value = metrics.get(key)
        if value is not None:
            out[key.split("/")[1]] = float(value[-1] if isinstance(value, list) else value)
    return out



def fresh_optimizer(worker) -> None:
    """Forget the optimizer's moments, as each stage of the GPU recipes starts a new verl job with a new
    optimizer: Adam's second moments from a converged SFT are tiny, and an RL gradient divided by them moves
    the weights many times the learning rate."""
    worker.actor.engine.optimizer.state.clear()
