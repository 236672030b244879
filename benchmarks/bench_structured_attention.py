"""Structured attention: our attention "npr" vs causal SDPA (flash) vs SDPA with a dense mask, and, on
CPU, the packed-vs-padded throughput of verl's real actor log-prob pass.

  python benchmarks/bench_structured_attention.py --mode kernel      # GPU: 4k/16k/32k tokens, Qwen3-4B heads, bf16
  python benchmarks/bench_structured_attention.py --mode actor       # CPU: verl ActorRolloutRefWorker, tiny model

kernel: forward+backward time and peak memory of one attention layer (32 q heads, 8 kv heads, dim 128)
over one sequence of N tokens whose blocks have 4 branches each. Goal: npr <= 1.0x causal flash at
16k and 32k. actor: tokens/s of compute_log_prob with use_remove_padding True and False over the same
ragged batch of reference-decoder trajectories. Rows go to benchmarks/results/structured_attention.csv.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import append_rows, git_sha, quantiles  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "structured_attention.csv"


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"cpu ({os.cpu_count()} cores)"


def versions() -> dict:
    import transformers

    out = {"torch": torch.__version__, "transformers": transformers.__version__}
    try:
        from importlib.metadata import version

        out["verl"] = version("verl")
    except Exception:  # noqa: BLE001 - verl is optional for --mode kernel
        out["verl"] = "-"
    return out


# --- kernel mode -----------------------------------------------------------------------------------

def setup_layout(num_tokens: int, num_branches: int = 4, block_tokens: int = 4096):
    """Per-token (block_id, branch_id) [N] of one sequence: a shared prefix of 1/8, then blocks of
    `block_tokens` (1/16 shared guideline, `num_branches` equal branches, 1/16 takeaway)."""
    block, branch = torch.zeros(num_tokens, dtype=torch.long), torch.zeros(num_tokens, dtype=torch.long)
    cursor, block_index = num_tokens // 8, 0
    while cursor < num_tokens:
        block_index += 1
        size = min(block_tokens, num_tokens - cursor)
        shared = size // 16
        span = (size - 2 * shared) // num_branches
        block[cursor:cursor + size] = block_index
        start = cursor + shared
        for b in range(num_branches):
            branch[start + b * span: start + (b + 1) * span] = b + 1
        cursor += size
    return block, branch


def setup_qkv(num_tokens: int, device: str, dtype, heads=32, kv_heads=8, dim=128):
    make = lambda h: torch.randn(1, h, num_tokens, dim, device=device, dtype=dtype, requires_grad=True)  # noqa: E731
    return make(heads), make(kv_heads), make(kv_heads)


@functools.lru_cache(maxsize=None)
def _lengths(block):  # one lengths tensor per layout, as a model forward passes the same one to every layer
    return torch.tensor([block.numel()])


def run_npr(q, k, v, block, branch):
    from npr.attention import npr_attention_forward
    from npr.masks import BLOCK_KEY, BRANCH_KEY, LENGTHS_KEY

    module = torch.nn.Module()
    kwargs = {BLOCK_KEY: block, BRANCH_KEY: branch, LENGTHS_KEY: _lengths(block)}
    out, _ = npr_attention_forward(module, q, k, v, None, **kwargs)
    return out


def run_causal(q, k, v, block, branch):
    import torch.nn.functional as F

    return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)


def run_dense(q, k, v, block, branch):
    import torch.nn.functional as F

    from npr.masks import dense_mask_from_ids

    mask = dense_mask_from_ids(block[None].to(q.device), branch[None].to(q.device))[:, None]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)


def run_mask_build(q, k, v, block, branch):
    from npr.attention import _structure_mask
    from npr.masks import BLOCK_KEY, BRANCH_KEY, LENGTHS_KEY

    kwargs = {BLOCK_KEY: block, BRANCH_KEY: branch, LENGTHS_KEY: torch.tensor([block.numel()])}
    _structure_mask(kwargs, 1, block.numel(), block.numel(), q.device)
    return q  # backward of a no-op: only the build is timed


PROVIDERS = {"npr": run_npr, "npr_mask_build": run_mask_build, "causal_flash": run_causal,
             "sdpa_dense_mask": run_dense}


def bench_kernel(args) -> list[dict]:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    rows = []
    for num_tokens in args.tokens:
        block, branch = setup_layout(num_tokens, args.branches)
        for name, fn in PROVIDERS.items():
            if name == "sdpa_dense_mask" and num_tokens > args.max_dense_tokens:
                continue
            times, peak = [], 0
            for rep in range(args.warmup + args.repeats):
                q, k, v = setup_qkv(num_tokens, device, dtype)
                # the same kwargs tensors every call: the mask is rendered once, as once per forward for all
                # layers in a model; its build time is the separate provider npr_mask_build
                block_in = block.clone() if name == "npr_mask_build" else block
                if device == "cuda":
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                start = time.perf_counter()
                out = fn(q, k, v, block_in, branch)
                out.float().sum().backward()
                if device == "cuda":
                    torch.cuda.synchronize()
                    peak = max(peak, torch.cuda.max_memory_allocated())
                if rep >= args.warmup:
                    times.append(time.perf_counter() - start)
            med, p20, p80 = quantiles(times)
            rows.append({"case": "kernel_fwd_bwd", "tokens": num_tokens, "branches": args.branches,
                         "provider": name, "median_s": med, "p20_s": p20, "p80_s": p80,
                         "peak_mem_gib": round(peak / 2**30, 3)})
            print(f"{num_tokens:>6} tokens  {name:<16} {med * 1e3:9.2f} ms  peak {peak / 2**30:6.2f} GiB")
    for num_tokens in args.tokens:
        base = [r for r in rows if r["tokens"] == num_tokens and r["provider"] == "causal_flash"]
        ours = [r for r in rows if r["tokens"] == num_tokens and r["provider"] == "npr"]
        if base and ours:
            ours[0]["ratio_vs_causal"] = round(ours[0]["median_s"] / base[0]["median_s"], 3)
            print(f"{num_tokens:>6} tokens  npr / causal flash = {ours[0]['ratio_vs_causal']}")
    return rows


# --- actor mode (CPU) -----------------------------------------------------------------------------

ACTOR_SCRIPTS = [[[24, 24, 24]], [[2]], [], [[12, 12], [20, 4]], [[3, 3]], [], [[30, 2]], [[5]]]


def bench_actor(args) -> list[dict]:
    os.environ.setdefault("VERL_PLATFORM", "cpu")
    import tempfile

    import verl  # noqa: F401  (loads the plugin)
    from tests.verl_npr.actor_probe import decode, make_config
    from verl_npr.local_actor import actor_log_probs, make_worker

    from npr.tiny import save_tiny
    from verl_npr.batch import Sample, make_data_proto

    with tempfile.TemporaryDirectory() as model_dir:
        save_tiny(model_dir, seed=3)
        tokenizer, results = decode(model_dir, ACTOR_SCRIPTS)
        samples = [Sample.from_decoded(r) for r in results]
        data = make_data_proto(samples, tokenizer.pad_token_id)
        worker = make_worker(make_config(model_dir, batch_size=len(samples), micro_batch_size=len(samples)))
        num_tokens = int(data.batch["attention_mask"].sum())
        rows, times = [], {True: [], False: []}
        for rep in range(args.warmup + args.repeats):  # interleaved, so load drift hits both alike
            for packed in (True, False):
                start = time.perf_counter()
                actor_log_probs(worker, data, use_remove_padding=packed)
                if rep >= args.warmup:
                    times[packed].append(time.perf_counter() - start)
        for packed in (True, False):
            med, p20, p80 = quantiles(times[packed])
            rows.append({"case": "actor_log_prob", "tokens": num_tokens, "branches": "ragged",
                         "provider": "packed" if packed else "padded", "median_s": med, "p20_s": p20,
                         "p80_s": p80, "tokens_per_s": round(num_tokens / med, 1)})
        rows[0]["ratio_vs_padded"] = round(rows[1]["median_s"] / rows[0]["median_s"], 3)
        lengths = [len(s.prompt_ids) + len(s.response_ids) for s in samples]
        print(f"{len(samples)} sequences, lengths {lengths}, {num_tokens} tokens; padded batch "
              f"{len(samples)} x {max(lengths)} = {len(samples) * max(lengths)} slots")
        for row in rows:
            print(f"{row['provider']:<7} {row['median_s'] * 1e3:8.1f} ms  {row['tokens_per_s']:9.1f} tokens/s")
        print(f"packed / padded throughput = {rows[0]['ratio_vs_padded']}")
        return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["kernel", "actor"], default=None,
                        help="default: kernel with CUDA, actor without")
    parser.add_argument("--tokens", type=int, nargs="+", default=None, help="kernel: sequence lengths")
    parser.add_argument("--branches", type=int, default=4)
    parser.add_argument("--max-dense-tokens", type=int, default=16384, help="skip the dense mask above this")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--no-save", action="store_true", help="print only, do not append to the CSV")
    args = parser.parse_args()
    has_cuda = torch.cuda.is_available()
    args.mode = args.mode or ("kernel" if has_cuda else "actor")
    args.tokens = args.tokens or ([4096, 16384, 32768] if has_cuda else [512, 1024])
    rows = bench_kernel(args) if args.mode == "kernel" else bench_actor(args)
    device = "cuda" if has_cuda and args.mode == "kernel" else "cpu"
    meta = {"device": device_name(device), **versions(), "git_sha": git_sha(),
            "date": datetime.date.today().isoformat()}
    rows = [{**meta, **row} for row in rows]
    fields = ["device", "torch", "transformers", "verl", "git_sha", "date", "case", "tokens", "branches", "provider",
              "median_s", "p20_s", "p80_s", "peak_mem_gib", "tokens_per_s", "ratio_vs_causal", "ratio_vs_padded"]
    rows = [{key: row.get(key, "") for key in fields} for row in rows]
    if not args.no_save:
        append_rows(RESULTS, rows)


if __name__ == "__main__":
    main()
