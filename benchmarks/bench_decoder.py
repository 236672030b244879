"""Fork-join decoding vs decoding the same linearised tokens sequentially (same runner) vs
transformers `generate`, for a scripted workload: a prefix, then n branches of L tokens.

Rows go to benchmarks/results/decoder.csv with device, versions, git sha, date and median/p20/p80.
  python benchmarks/bench_decoder.py                       # CPU, tiny model
  python benchmarks/bench_decoder.py --model qwen3-4b-shape --prefix 2048 --widths 1 2 4 8 --branch-len 256
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from npr.decoding import Decoder, DecodingConfig, SamplingParams, ScriptedStructure, sequential_replay  # noqa: E402
from npr.tiny import make_tiny_model, make_tiny_tokenizer  # noqa: E402
from common import append_rows, git_sha, quantiles  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "decoder.csv"
# Peak memory bandwidth (bytes/s) used for the weight-read bound of one decode step.
BANDWIDTH = {"H200": 4.8e12, "H100": 3.35e12}


def make_model(kind: str, tokenizer, device: str):
    if kind == "tiny":
        return make_tiny_model(tokenizer, dtype=torch.float32).to(device)
    if kind == "qwen3-4b-shape":  # Qwen3-4B's shapes, random weights, bf16
        from transformers import Qwen3Config, Qwen3ForCausalLM

        config = Qwen3Config(vocab_size=151936, hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
                             num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                             max_position_embeddings=40960, rope_theta=1e6, tie_word_embeddings=True)
        config._attn_implementation = "sdpa"
        with torch.device(device):
            model = Qwen3ForCausalLM._from_config(config, dtype=torch.bfloat16)
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        return model.eval()
    raise ValueError(f"unknown --model {kind!r}; choose tiny or qwen3-4b-shape")


def setup_case(args, tokenizer, model, width: int):
    """The shared workload of one case: prompt ids and the script (n branches of branch_len tokens)."""
    filler = tokenizer.encode(" the answer is", add_special_tokens=False)
    prompt = (filler * (args.prefix // len(filler) + 1))[: args.prefix]
    script = ScriptedStructure([[args.branch_len] * width])
    budget = width * (args.branch_len + 8) + 64
    config = DecodingConfig(max_branches=max(width, 1), max_new_tokens=args.branch_len + 64 + 8 * width,
                            max_total_tokens=budget)
    return prompt, script, config


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, repeats: int):
    fn()  # warm-up (and CUDA-graph capture)
    times, out = [], None
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - start)
    return times, out


def step_ms(decoder, prompt, sampling, **kw) -> float:
    """Median wall time between consecutive decode steps (steady state)."""
    stamps = []
    decoder.generate([prompt], sampling, progress=lambda info: stamps.append(time.perf_counter()), **kw)
    gaps = [b - a for a, b in zip(stamps[3:], stamps[4:])]
    return 1000 * statistics.median(gaps)


def environment(device: str) -> dict:
    import transformers

    name = torch.cuda.get_device_name() if device == "cuda" else f"cpu x{os.cpu_count()}"
    return {"device": name, "torch": torch.__version__, "transformers": transformers.__version__,
            "git_sha": git_sha(), "date": datetime.date.today().isoformat()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", choices=["tiny", "qwen3-4b-shape"])
    parser.add_argument("--prefix", type=int, default=64)
    parser.add_argument("--widths", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--branch-len", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--hf-tokens", type=int, default=0, help="new tokens for transformers generate (0 = skip)")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)

    device = "cuda" if torch.cuda.is_available() and args.model != "tiny" else "cpu"
    torch.manual_seed(0)
    tokenizer = make_tiny_tokenizer()
    model = make_model(args.model, tokenizer, device)
    env = environment(device)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    greedy = SamplingParams(temperature=0.0)
    rows = []
    print(f"# {env['device']}  torch {env['torch']}  model {args.model} ({weight_bytes / 1e9:.2f} GB)  "
          f"prefix {args.prefix}  branch {args.branch_len}")
    print(f"{'width':>5} {'total':>6} {'crit':>5} {'ideal':>6} {'fj s':>8} {'seq s':>8} {'speedup':>8} "
          f"{'eff':>5} {'fj ms/step':>10} {'seq ms/step':>11}")
    for width in args.widths:
        prompt, script, config = setup_case(args, tokenizer, model, width)
        fork_join = Decoder(model, tokenizer, config)
        fj_times, [fj] = timed(lambda: fork_join.generate([prompt], greedy, script=script), args.repeats)
        total, crit = fj.stats["total_tokens"], fj.stats["critical_path_tokens"]
        sequential, forced = sequential_replay(model, tokenizer, fj)  # same linearised ids, then EOS
        seq_times, [seq] = timed(lambda: sequential.generate([prompt], greedy, processors=forced), args.repeats)
        assert seq.token_ids == fj.token_ids, "the sequential replay must decode the same ids"
        fj_step = step_ms(fork_join, prompt, greedy, script=script)
        seq_step = step_ms(sequential, prompt, greedy, processors=forced)
        fj_med, fj_p20, fj_p80 = quantiles(fj_times)
        seq_med, seq_p20, seq_p80 = quantiles(seq_times)
        ideal = total / crit
        speedup = seq_med / fj_med
        print(f"{width:>5} {total:>6} {crit:>5} {ideal:>6.2f} {fj_med:>8.3f} {seq_med:>8.3f} {speedup:>8.2f} "
              f"{speedup / ideal:>5.2f} {fj_step:>10.2f} {seq_step:>11.2f}")
        base = dict(env, model=args.model, prefix=args.prefix, width=width, branch_len=args.branch_len,
                    total_tokens=total, critical_path_tokens=crit, ideal_speedup=round(ideal, 3))
        rows.append(dict(base, provider="fork_join", median_s=fj_med, p20_s=fj_p20, p80_s=fj_p80,
                         ms_per_step=round(fj_step, 3), speedup=round(speedup, 3)))
        rows.append(dict(base, provider="sequential_same_runner", median_s=seq_med, p20_s=seq_p20, p80_s=seq_p80,
                         ms_per_step=round(seq_step, 3), speedup=1.0))
    if args.hf_tokens:
        prompt, _, _ = setup_case(args, tokenizer, model, 1)
        ids = torch.tensor([prompt], device=device)
        n = args.hf_tokens
        gen = lambda: model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,  # noqa: E731
                                     min_new_tokens=n, do_sample=False)
        hf_times, _ = timed(gen, max(1, args.repeats - 1))
        med, p20, p80 = quantiles(hf_times)
        print(f"transformers generate: {n} tokens in {med:.3f} s = {1000 * med / n:.2f} ms/token "
              f"(attn {model.config._attn_implementation})")
        rows.append(dict(env, model=args.model, prefix=args.prefix, width=1, branch_len=n, total_tokens=n,
                         critical_path_tokens=n, ideal_speedup=1.0, provider="transformers_generate",
                         median_s=med, p20_s=p20, p80_s=p80, ms_per_step=round(1000 * med / n, 3), speedup=""))
    bandwidth = next((bw for key, bw in BANDWIDTH.items() if key in env["device"]), None)
    if bandwidth:
        print(f"weight-read bound per decode step: {1000 * weight_bytes / bandwidth:.2f} ms "
              f"({weight_bytes / 1e9:.2f} GB at {bandwidth / 1e12:.2f} TB/s)")
    append_rows(args.out, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
