"""Run verl 0.9.1's real `ActorRolloutRefWorker(role="actor")` in this process on the cpu platform
(fsdp2, gloo, world size 1, fp32) over reference-decoder trajectories of different lengths and widths,
and print one JSON line: the actor's log-probs (packed and padded) against the decoder's, and the
loss and grad norm of one `npr_papo` update against a hand computation. Not a test module: the tests
run it in a fresh interpreter (`python -m tests.verl_npr.actor_probe`), as verl wants its platform
chosen before it is first used. Also the setup shared with benchmarks/bench_structured_attention.py."""

from __future__ import annotations

import json
import os
import sys
import tempfile

os.environ.setdefault("VERL_PLATFORM", "cpu")
for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29517", "RANK": "0", "WORLD_SIZE": "1",
                   "LOCAL_RANK": "0"}.items():
    os.environ.setdefault(key, value)

import torch  # noqa: E402

SCRIPTS = [[[2, 3]], [[3, 1, 4], [2, 2]], [], [[5, 1]]]  # widths 2, 3+2, sequential, 2 (made invalid)
ADVANTAGES = [1.5, -0.5, 0.25, 2.0]  # per row; row 3 is marked structurally invalid


def decode(model_dir: str, scripts=SCRIPTS, num_prompts: int | None = None):
    """Reference-decoder trajectories (float32, greedy) of the tiny model saved in model_dir."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from npr.decoding import Decoder, DecodingConfig, SamplingParams, ScriptedStructure

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    texts = ["What is 6 times 7?", "Add 2 and 3.", "Why is the sky blue?", "Name a prime."]
    num_prompts = num_prompts or len(scripts)
    prompts = []
    for i in range(num_prompts):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": texts[i % len(texts)]}],
                                            add_generation_prompt=True)
        prompts.append(list(ids if isinstance(ids, list) else ids["input_ids"]))
    decoder = Decoder(model, tokenizer, DecodingConfig(max_branches=5, max_new_tokens=64, use_cuda_graphs=False))
    structures = [ScriptedStructure(branch_lengths=s) for s in scripts]
    return tokenizer, decoder.generate(prompts, SamplingParams(temperature=0.0, seed=0), script=structures)


def make_config(model_dir: str, batch_size: int, micro_batch_size: int):
    from hydra import compose, initialize_config_module
    from omegaconf import open_dict

    overrides = [
        f"actor_rollout_ref.model.path={model_dir}",
        "+actor_rollout_ref.model.override_config.attn_implementation=npr",
        "actor_rollout_ref.model.enable_gradient_checkpointing=false",
        "actor_rollout_ref.actor.strategy=fsdp2",
        "actor_rollout_ref.actor.fsdp_config.dtype=float32",
        "+actor_rollout_ref.actor.fsdp_config.mixed_precision={param_dtype: fp32, reduce_dtype: fp32, buffer_dtype: fp32}",
        "actor_rollout_ref.actor.use_torch_compile=false",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={batch_size}",
        f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={micro_batch_size}",
        "actor_rollout_ref.actor.policy_loss.loss_mode=npr_papo",
        "actor_rollout_ref.actor.loss_agg_mode=token-mean",
        "actor_rollout_ref.actor.use_kl_loss=false",
        "actor_rollout_ref.actor.entropy_coeff=0",
        "actor_rollout_ref.actor.optim.lr=1e-7",
        "actor_rollout_ref.actor.optim.clip_grad=1e9",
        f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={micro_batch_size}",
        "actor_rollout_ref.rollout.n=1",
        "trainer.device=cpu",
    ]
    with initialize_config_module(config_module="verl.trainer.config", version_base=None):
        cfg = compose(config_name="ppo_trainer", overrides=overrides)
    with open_dict(cfg):
        cfg.actor_rollout_ref.model.use_remove_padding = True
    return cfg


def make_worker(cfg):
    import torch.distributed as dist
    from verl.workers.engine_workers import ActorRolloutRefWorker

    if not dist.is_initialized():
        dist.init_process_group("gloo", rank=0, world_size=1)
    worker = ActorRolloutRefWorker(cfg.actor_rollout_ref, role="actor")
    worker.init_model()
    return worker


def to_tensordict(data, **meta):
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils.padding import left_right_2_no_padding

    data.meta_info["temperature"] = 1.0
    td = left_right_2_no_padding(data.to_tensordict())
    tu.assign_non_tensor(td, **meta)
    return td


def actor_log_probs(worker, data, use_remove_padding: bool, max_token_len: int | None = None) -> torch.Tensor:
    """[B, R] log-probs from verl's compute_log_prob (padded back with verl's own helper); max_token_len
    switches on verl's dynamic batch size (micro-batches regrouped by token count)."""
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils.padding import no_padding_2_padding

    dynamic = {} if max_token_len is None else {"use_dynamic_bsz": True, "max_token_len_per_gpu": max_token_len}
    td = to_tensordict(data.select(deepcopy=True), calculate_entropy=False, compute_loss=False,
                       use_remove_padding=use_remove_padding, **dynamic)
    out = worker.compute_log_prob(td)
    return no_padding_2_padding(tu.get(out, "log_probs"), td).float()


def hand_update(model_dir: str, samples, advantages) -> tuple[float, float]:
    """PAPO loss and grad norm by hand: one plain HF forward per sequence with its explicit dense mask."""
    from transformers import AutoModelForCausalLM

    from npr.attention import register_attention
    from npr.masks import dense_mask

    register_attention()
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="npr")
    total, num_tokens = 0.0, sum(len(s.response_ids) for s in samples if s.is_valid)
    for sample, adv in zip(samples, advantages):
        if not sample.is_valid:
            continue
        layout = sample.layout
        logits = model(layout.token_ids[None], position_ids=layout.position_ids[None],
                       attention_mask=dense_mask(layout)[None, None]).logits[0].float()
        start = layout.response_start
        logp = torch.log_softmax(logits[start - 1:-1], -1).gather(1, layout.token_ids[start:, None])[:, 0]
        total = total + (-adv * torch.exp(logp - logp.detach())).sum() / num_tokens
    total.backward()
    norm = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in model.parameters() if p.grad is not None))
    return float(total), float(norm)


def main() -> None:
    import verl  # noqa: F401  (loads the plugin through verl's entry point)

    from npr.tiny import save_tiny
    from verl_npr.batch import Sample, make_data_proto

    with tempfile.TemporaryDirectory() as model_dir:
        save_tiny(model_dir, seed=3)
        tokenizer, results = decode(model_dir)
        samples = [Sample.from_decoded(r) for r in results]
        samples[3] = Sample(samples[3].prompt_ids, samples[3].response_ids, samples[3].layout, False,
                            samples[3].rollout_log_probs)
        data = make_data_proto(samples, tokenizer.pad_token_id)
        worker = make_worker(make_config(model_dir, batch_size=len(samples), micro_batch_size=2))

        decoder_lp = torch.zeros_like(data.batch["response_mask"], dtype=torch.float32)
        for row, r in enumerate(results):
            decoder_lp[row, :len(r.logprobs)] = torch.tensor(r.logprobs)
        real = torch.zeros_like(decoder_lp, dtype=torch.bool)
        for row, r in enumerate(results):
            real[row, :len(r.token_ids)] = True
        report = {"widths": [r.stats["max_width"] for r in results], "lengths": [len(r.token_ids) for r in results],
                  "valid": [s.is_valid for s in samples]}
        module = worker.actor.engine.module
        embed = next(m for name, m in module.named_modules() if name.endswith("embed_tokens"))
        shapes: list = []
        hook = embed.register_forward_hook(lambda mod, args, out: shapes.append(list(args[0].shape)))
        for mode in (True, False):
            shapes.clear()
            got = actor_log_probs(worker, data, use_remove_padding=mode)
            name = "packed" if mode else "padded"
            report[f"max_diff_{name}"] = float((got - decoder_lp)[real].abs().max())
            report[f"input_shapes_{name}"] = list(shapes)
        hook.remove()
        got = actor_log_probs(worker, data, use_remove_padding=True, max_token_len=120)  # regrouped micro-batches
        report["max_diff_packed_dynamic_bsz"] = float((got - decoder_lp)[real].abs().max())
        # negative control: the same worker with transformers building the mask ("sdpa")
        config = module.config
        config._attn_implementation = "sdpa"
        for mode in (True, False):
            got = actor_log_probs(worker, data, use_remove_padding=mode)
            report[f"sdpa_max_diff_{'packed' if mode else 'padded'}"] = float((got - decoder_lp)[real].abs().max())
        config._attn_implementation = "npr"

        hand_loss, hand_norm = hand_update(model_dir, samples, ADVANTAGES)
        adv = torch.tensor(ADVANTAGES)[:, None] * data.batch["response_mask"].float()
        data.batch["advantages"] = adv
        data.batch["old_log_probs"] = decoder_lp
        from verl.utils import tensordict_utils as tu

        td = to_tensordict(data, calculate_entropy=False, global_batch_size=len(samples),
                           mini_batch_size=len(samples), epochs=1, seed=0, dataloader_kwargs={"shuffle": False},
                           compute_loss=True, use_remove_padding=True)
        metrics = tu.get(worker.update_actor(td), "metrics")
        report.update(hand_loss=hand_loss, hand_grad_norm=hand_norm,
                      verl_metrics={k: (v if isinstance(v, (int, float)) else
                                        (v[0] if isinstance(v, list) and len(v) == 1 else v))
                                    for k, v in metrics.items() if "loss" in k or "grad_norm" in k or "papo" in k})
    print(json.dumps(report))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
