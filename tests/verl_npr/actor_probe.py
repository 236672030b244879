"""Run verl 0.9.1's real `ActorRolloutRefWorker(role="actor")` in this process on the cpu platform
(fsdp2, gloo, world size 1, fp32) over reference-decoder trajectories of different lengths and widths,
and print one JSON line: the actor's log-probs (packed and padded) against the decoder's, and the
loss and grad norm of one `npr_papo` update against a hand computation. Not a test module: the tests
run it in a fresh interpreter (`python -m tests.verl_npr.actor_probe`), as verl wants its platform
chosen before it is first used. The actor is driven through verl_npr.local_actor; `decode` and
`make_config` are shared with benchmarks/bench_structured_attention.py."""

from __future__ import annotations

import json
import sys
import tempfile

from verl_npr.local_actor import setup_env  # imports no verl

setup_env("cpu", port=29517)

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
    """verl's actor config for the probe: a tiny lr and no clipping, so the update's metrics are the loss's."""
    from verl_npr.local_actor import actor_config

    return actor_config(model_dir, batch_size, micro_batch_size, lr=1e-7, clip_grad=1e9, use_remove_padding=True)


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
    from verl_npr.local_actor import actor_log_probs, make_worker, update

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
        metrics = update(worker, data, adv, decoder_lp, seed=0, use_remove_padding=True)
        report.update(hand_loss=hand_loss, hand_grad_norm=hand_norm,
                      verl_metrics={k: v for k, v in metrics.items() if "loss" in k or "grad_norm" in k or "papo" in k})
    print(json.dumps(report))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
