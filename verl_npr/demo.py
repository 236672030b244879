"""`npr demo`: the NPR pipeline in miniature on a CPU, through the real code paths. A synthetic task
with a genuine parallel decomposition ("sum these digits": one plan and one step per chunk, a takeaway
adding the partial sums, a \\boxed{} answer) built with `Templates`; a tiny local model prepared with
the tag tokens by `npr.prepare`; Stage 2 as verl actor updates (fsdp2, cpu platform, attention `npr`)
on the gold trajectories; Stage 3 as PAPO updates on fork-join rollouts; evaluation by `npr.eval`.

Stage 2 goes through verl's real `ActorRolloutRefWorker.update_actor` with the `npr_papo` loss and
advantage 1 on every gold token: ratio = exp(logp - logp.detach()) makes its gradient the token-mean
cross-entropy gradient of SFT (not verl's `sft_trainer` subprocess, which starts too slowly here)."""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

QUESTION_PREFIX = "Sum: "
# verl's padded path: in the packed path (use_remove_padding) verl 0.9.1 computes fp32 log-probs without
# flash-attn with a Python loop over rows, i.e. one logsumexp per token on CPU (about 4x slower here)
USE_REMOVE_PADDING = False


@dataclass(frozen=True)
class DemoConfig:
    output_dir: str = "out/demo"
    seed: int = 0
    engine: str = "reference"
    min_numbers: int = 8
    max_numbers: int = 12
    num_train: int = 4000
    num_test: int = 24
    sft_budget_s: float = 120.0
    sft_max_steps: int = 2000
    sft_batch: int = 32
    sft_lr: float = 3e-3
    papo_steps: int = 4
    papo_prompts: int = 4
    papo_group: int = 4
    papo_lr: float = 2e-4
    hidden_size: int = 128
    num_layers: int = 2

    def __post_init__(self):
        if self.engine not in ("reference", "sglang"):
            raise ValueError(f"engine must be 'reference' or 'sglang', got {self.engine!r}")
        if not 4 <= self.min_numbers <= self.max_numbers:
            raise ValueError(f"need 4 <= min_numbers <= max_numbers, got {self.min_numbers}, {self.max_numbers}")


FAST = dict(min_numbers=4, max_numbers=6, num_test=8, sft_budget_s=30.0, sft_batch=16, papo_steps=1, papo_prompts=2,
            papo_group=4)


# -- the task ----------------------------------------------------------------------------------------------
def chunk(numbers: list[int]) -> list[list[int]]:
    """Split into 2-4 nearly equal consecutive chunks (one plan / step each): len//3 chunks, at least 2."""
    k = min(4, max(2, len(numbers) // 3))
    size, extra = divmod(len(numbers), k)
    out, start = [], 0
    for i in range(k):
        end = start + size + (i < extra)
        out.append(numbers[start:end])
        start = end
    return out


def make_problem(rng: random.Random, cfg: DemoConfig) -> dict[str, Any]:
    numbers = [rng.randint(1, 9) for _ in range(rng.randint(cfg.min_numbers, cfg.max_numbers))]
    parts = chunk(numbers)
    sums = [sum(p) for p in parts]
    return {"question": QUESTION_PREFIX + " ".join(map(str, numbers)), "answer": str(sum(numbers)),
            "plans": [f"{i}: " + "+".join(map(str, p)) for i, p in enumerate(parts, 1)],
            "steps": [" " + "+".join(map(str, p)) + f"={s}" for p, s in zip(parts, sums)],
            "takeaway": "+".join(map(str, sums)) + f"={sum(numbers)}",
            "final": f"\n\\boxed{{{sum(numbers)}}}"}


def make_splits(cfg: DemoConfig) -> tuple[list[dict], list[dict]]:
    rng = random.Random(cfg.seed)
    test, seen = [], set()
    while len(test) < cfg.num_test:
        p = make_problem(rng, cfg)
        if p["question"] not in seen:
            seen.add(p["question"])
            test.append(p)
    train = []
    while len(train) < cfg.num_train:
        p = make_problem(rng, cfg)
        if p["question"] not in seen:  # held-out: no test question appears in training
            train.append(p)
    return train, test


def prompt_ids(tokenizer, question: str) -> list[int]:
    from npr.cli.generate import encode_prompt

    return list(encode_prompt(tokenizer, question, True))


def gold_sample(templates, tokenizer, problem: dict):
    """The canonical ids of the gold trajectory (Templates.block_ids + final answer + eos) as a Sample."""
    from npr.layout import build_layout
    from verl_npr.batch import Sample

    prompt = prompt_ids(tokenizer, problem["question"])
    response = (templates.block_ids(problem["plans"], problem["steps"], problem["takeaway"])
                + templates.encode(problem["final"]) + [tokenizer.eos_token_id])
    layout = build_layout(prompt + response, templates.tags, len(prompt))
    return Sample(prompt, response, layout, bool(layout.is_valid))


# -- model -------------------------------------------------------------------------------------------------
def make_model(cfg: DemoConfig, path: str):
    """A tiny random Qwen3 + byte-level BPE tokenizer made locally, prepared with the tags by npr.prepare."""
    from npr.prepare import prepare_tokenizer_and_model
    from npr.tiny import make_tiny_model, make_tiny_tokenizer

    tokenizer = make_tiny_tokenizer(with_tags=False)
    model = make_tiny_model(tokenizer, seed=cfg.seed, hidden_size=cfg.hidden_size, intermediate_size=2 * cfg.hidden_size,
                            num_hidden_layers=cfg.num_layers, head_dim=cfg.hidden_size // 4, initializer_range=0.02)
    prepared = prepare_tokenizer_and_model(tokenizer, model)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return prepared


# -- verl's actor, in this process -------------------------------------------------------------------------
def setup_env() -> None:
    os.environ.setdefault("VERL_PLATFORM", "cpu")
    for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(29500 + os.getpid() % 1000), "RANK": "0",
                       "WORLD_SIZE": "1", "LOCAL_RANK": "0"}.items():
        os.environ.setdefault(key, value)


def make_worker(model_dir: str, batch: int, micro_batch: int, lr: float):
    import torch.distributed as dist
    from hydra import compose, initialize_config_module
    from omegaconf import open_dict
    from verl.workers.engine_workers import ActorRolloutRefWorker

    overrides = [
        f"actor_rollout_ref.model.path={model_dir}",
        "+actor_rollout_ref.model.override_config.attn_implementation=npr",
        "actor_rollout_ref.model.enable_gradient_checkpointing=false",
        "actor_rollout_ref.actor.strategy=fsdp2",
        "actor_rollout_ref.actor.fsdp_config.dtype=float32",
        "+actor_rollout_ref.actor.fsdp_config.mixed_precision={param_dtype: fp32, reduce_dtype: fp32, buffer_dtype: fp32}",
        "actor_rollout_ref.actor.use_torch_compile=false",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={batch}",
        f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={micro_batch}",
        "actor_rollout_ref.actor.policy_loss.loss_mode=npr_papo",
        "actor_rollout_ref.actor.loss_agg_mode=token-mean",
        "actor_rollout_ref.actor.use_kl_loss=false",
        "actor_rollout_ref.actor.entropy_coeff=0",
        f"actor_rollout_ref.actor.optim.lr={lr}",
        "actor_rollout_ref.actor.optim.clip_grad=1.0",
        f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={micro_batch}",
        "actor_rollout_ref.rollout.n=1",
        "trainer.device=cpu",
    ]
    with initialize_config_module(config_module="verl.trainer.config", version_base=None):
        cfg = compose(config_name="ppo_trainer", overrides=overrides)
    with open_dict(cfg):
        cfg.actor_rollout_ref.model.use_remove_padding = USE_REMOVE_PADDING
    if not dist.is_initialized():
        dist.init_process_group("gloo", rank=0, world_size=1)
    worker = ActorRolloutRefWorker(cfg.actor_rollout_ref, role="actor")
    worker.init_model()
    return worker


def _tensordict(data, **meta):
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils.padding import left_right_2_no_padding

    data.meta_info["temperature"] = 1.0
    td = left_right_2_no_padding(data.to_tensordict())
    tu.assign_non_tensor(td, **meta)
    return td


def actor_log_probs(worker, data):
    """[B, R] log-probs of verl's compute_log_prob (packed), padded back."""
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils.padding import no_padding_2_padding

    td = _tensordict(data.select(deepcopy=True), calculate_entropy=False, compute_loss=False, use_remove_padding=USE_REMOVE_PADDING)
    return no_padding_2_padding(tu.get(worker.compute_log_prob(td), "log_probs"), td).float()


def update(worker, data, advantages, old_log_probs, step: int) -> dict[str, float]:
    """One optimizer step of verl's actor with the npr_papo loss on the whole batch."""
    from verl.utils import tensordict_utils as tu

    data.batch["advantages"] = advantages
    data.batch["old_log_probs"] = old_log_probs
    size = len(data)
    td = _tensordict(data, calculate_entropy=False, global_batch_size=size, mini_batch_size=size, epochs=1, seed=step,
                     dataloader_kwargs={"shuffle": False}, compute_loss=True, use_remove_padding=USE_REMOVE_PADDING)
    metrics = tu.get(worker.update_actor(td), "metrics")
    flat = lambda v: v[0] if isinstance(v, list) and len(v) == 1 else v  # noqa: E731
    return {k: flat(v) for k, v in metrics.items() if k in ("actor/pg_loss", "grad_norm", "actor/grad_norm")}


def set_lr(worker, lr: float) -> None:
    optimizer = worker.actor.engine.optimizer
    for group in optimizer.param_groups:
        group["lr"] = lr


def sync_weights(worker, hf_model) -> None:
    """Copy the actor's (fsdp2, world size 1) parameters into the HF model the engines decode with."""
    state = worker.actor.engine.module.state_dict()
    full = {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().clone() for k, v in state.items()}
    hf_model.load_state_dict(full, strict=False)


# -- evaluation through npr.eval ---------------------------------------------------------------------------
def evaluate(cfg: DemoConfig, model_dir: str, test_file: str, name: str, modes: tuple[str, ...], max_new: int):
    from npr.eval import run_eval
    from npr.eval.config import EvalConfig

    ecfg = EvalConfig(benchmarks=({"name": "demo_sum", "source": test_file},), engine=cfg.engine, model=model_dir,
                      modes=modes, n=1, temperature=0.0, top_p=1.0, max_new_tokens=max_new, max_branches=5,
                      seed=cfg.seed, pass_k=(1,), output_dir=os.path.join(cfg.output_dir, "eval", name),
                      dtype="float32", progress=False,
                      engine_args={"mem_fraction_static": 0.3, "max_total_tokens": 8192} if cfg.engine == "sglang" else {})
    return run_eval(ecfg)


def metrics_row(name: str, summary: dict) -> dict[str, Any]:
    res = summary["results"]["demo_sum"]
    par = res.get("parallel", {})
    row = {"phase": name, "accuracy": par.get("avg_at_k"), "trigger_rate": par.get("trigger_rate"),
           "mean_width": par.get("mean_width"), "tokens": par.get("tokens_per_response"),
           "critical_path": par.get("critical_path_per_response")}
    if "sequential" in res:
        row["sequential_accuracy"] = res["sequential"].get("avg_at_k")
    sp = (summary.get("speedup") or {}).get("demo_sum")
    if sp:
        row["wall_speedup"] = sp.get("wall_speedup")
    return row


# -- the pipeline ------------------------------------------------------------------------------------------
def run_demo(cfg: DemoConfig, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every phase; returns the report (also written to output_dir/report.json)."""
    log = log or (lambda line: print(line, flush=True))
    setup_env()
    import torch

    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    out = cfg.output_dir
    os.makedirs(out, exist_ok=True)

    def phase(name: str, start: float) -> None:
        timings[name] = round(time.perf_counter() - start, 1)
        log(f"[{time.perf_counter() - t0:6.1f}s] {name} done in {timings[name]:.1f}s")

    # 1. task
    start = time.perf_counter()
    train, test = make_splits(cfg)
    test_file = os.path.join(out, "test.jsonl")
    with open(test_file, "w") as f:
        for p in test:
            f.write(json.dumps({"question": p["question"], "answer": p["answer"]}) + "\n")
    with open(os.path.join(out, "train_example.json"), "w") as f:
        json.dump(train[0], f, indent=1)
    log(f"task: {len(train)} train / {len(test)} held-out problems, {cfg.min_numbers}-{cfg.max_numbers} digits, "
        f"2-4 chunks; e.g. {train[0]['question']!r} -> plans {train[0]['plans']}")
    # 2. model
    init_dir = os.path.join(out, "model-init")
    prepared = make_model(cfg, init_dir)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from npr.templates import Templates
    from verl_npr.batch import make_data_proto

    tokenizer = AutoTokenizer.from_pretrained(init_dir)
    templates = Templates.from_tokenizer(tokenizer)
    golds = [gold_sample(templates, tokenizer, p) for p in train]
    if not all(g.is_valid for g in golds):
        raise RuntimeError("a gold trajectory has an invalid layout: the task builder is broken")
    max_new = max(len(g.response_ids) for g in golds) + 16
    log(f"model: tiny Qwen3 ({cfg.num_layers} layers, hidden {cfg.hidden_size}), {len(tokenizer)} tokens, "
        f"tags prepared by npr.prepare (ids {prepared.tag_ids.guideline_open}..); gold responses "
        f"<= {max_new - 16} tokens")
    phase("task+model", start)

    start = time.perf_counter()
    before = evaluate(cfg, init_dir, test_file, "before_sft", ("parallel",), max_new)
    rows = [metrics_row("untrained", before)]
    log(f"eval untrained: accuracy {rows[-1]['accuracy']:.0%}, trigger rate {rows[-1]['trigger_rate']:.0%}")
    phase("eval untrained", start)

    # 3. Stage 2: parallel SFT through verl's actor
    start = time.perf_counter()
    import verl  # noqa: F401  (loads the plugin: platform cpu, attention npr, npr_papo)

    import math

    # verl needs every batch (SFT, PAPO, the NLL probe of 32) divisible by the micro-batch size
    worker = make_worker(init_dir, cfg.sft_batch, math.gcd(cfg.sft_batch, cfg.papo_prompts * cfg.papo_group, 32),
                         cfg.sft_lr)
    log(f"verl ActorRolloutRefWorker (fsdp2, cpu platform, attention npr) ready in {time.perf_counter() - start:.1f}s")
    rng = random.Random(cfg.seed + 1)
    sft_log = []
    step, t_sft = 0, time.perf_counter()
    while step < cfg.sft_max_steps and time.perf_counter() - t_sft < cfg.sft_budget_s:
        batch = rng.sample(golds, cfg.sft_batch)
        data = make_data_proto(batch, tokenizer.pad_token_id)
        mask = data.batch["response_mask"].float()
        m = update(worker, data, mask.clone(), torch.zeros_like(mask), step)
        step += 1
        if step % 10 == 0 or step == 3:
            lp = actor_log_probs(worker, make_data_proto(golds[:32], tokenizer.pad_token_id))
            mm = make_data_proto(golds[:32], tokenizer.pad_token_id).batch["response_mask"].float()
            nll = float(-(lp * mm).sum() / mm.sum())
            sft_log.append({"step": step, "nll": nll, "s": round(time.perf_counter() - t_sft, 1)})
            log(f"  SFT step {step}: train NLL {nll:.3f} ({time.perf_counter() - t_sft:.0f}s)")
    log(f"Stage 2: {step} verl actor updates of {cfg.sft_batch} gold trajectories")
    hf = AutoModelForCausalLM.from_pretrained(init_dir, dtype=torch.float32).eval()
    sync_weights(worker, hf)
    sft_dir = os.path.join(out, "model-sft")
    hf.save_pretrained(sft_dir)
    tokenizer.save_pretrained(sft_dir)
    phase("stage 2 SFT", start)

    start = time.perf_counter()
    after_sft = evaluate(cfg, sft_dir, test_file, "after_sft", ("parallel", "sequential"), max_new)
    rows.append(metrics_row("after SFT", after_sft))
    log(f"eval after SFT: accuracy {rows[-1]['accuracy']:.0%}, trigger rate {rows[-1]['trigger_rate']:.0%}, "
        f"speed-up {rows[-1].get('wall_speedup') or 0:.2f}x")
    phase("eval after SFT", start)

    # 4. Stage 3: PAPO on fork-join rollouts
    start = time.perf_counter()
    from npr.decoding import Decoder, DecodingConfig, SamplingParams
    from reward import grade
    from verl_npr.batch import Sample
    from verl_npr.papo import compute_papo_advantage

    set_lr(worker, cfg.papo_lr)
    decoder = Decoder(hf, tokenizer, DecodingConfig(max_branches=5, max_new_tokens=max_new))
    papo_log, logprob_gaps = [], []
    for it in range(cfg.papo_steps):
        problems = rng.sample(train, cfg.papo_prompts)
        prompts = [prompt_ids(tokenizer, p["question"]) for p in problems for _ in range(cfg.papo_group)]
        results = decoder.generate(prompts, SamplingParams(temperature=1.0, seed=cfg.seed * 1000 + it))
        samples = [Sample.from_decoded(r) for r in results]
        rewards = [1.0 if grade(r.text, problems[i // cfg.papo_group]["answer"]) else -1.0
                   for i, r in enumerate(results)]
        data = make_data_proto(samples, tokenizer.pad_token_id)
        mask = data.batch["response_mask"]
        lengths = [len(s.response_ids) for s in samples]
        token_rewards = torch.zeros_like(mask, dtype=torch.float32)
        for row, (n, r) in enumerate(zip(lengths, rewards)):
            token_rewards[row, n - 1] = r
        adv, _ = compute_papo_advantage(token_rewards, mask, index=[i // cfg.papo_group for i in range(len(samples))])
        engine_lp = data.batch["rollout_log_probs"]
        trainer_lp = actor_log_probs(worker, data)
        real = torch.zeros_like(mask, dtype=torch.bool)
        for row, n in enumerate(lengths):
            real[row, :n] = True
        gap = float((trainer_lp - engine_lp)[real].abs().max())
        logprob_gaps.append(gap)
        m = update(worker, data, adv, engine_lp, 10_000 + it)
        sync_weights(worker, hf)
        acc = sum(r > 0 for r in rewards) / len(rewards)
        widths = [r.stats["max_width"] for r in results]
        papo_log.append({"iteration": it, "reward_accuracy": acc, "valid": sum(s.is_valid for s in samples),
                         "max_width": max(widths), "logprob_gap": gap, **m})
        log(f"  PAPO {it}: {len(samples)} rollouts, accuracy {acc:.0%}, valid {papo_log[-1]['valid']}, "
            f"engine vs trainer max |dlogp| {gap:.1e}")
    papo_dir = os.path.join(out, "model-papo")
    hf.save_pretrained(papo_dir)
    tokenizer.save_pretrained(papo_dir)
    phase("stage 3 PAPO", start)

    start = time.perf_counter()
    after_papo = evaluate(cfg, papo_dir, test_file, "after_papo", ("parallel", "sequential"), max_new)
    rows.append(metrics_row("after PAPO", after_papo))
    log(f"eval after PAPO: accuracy {rows[-1]['accuracy']:.0%}, trigger rate {rows[-1]['trigger_rate']:.0%}")
    phase("eval after PAPO", start)

    report = {"config": asdict(cfg), "rows": rows, "sft": {"steps": step, "log": sft_log}, "papo": papo_log,
              "max_logprob_gap": max(logprob_gaps) if logprob_gaps else None, "timings_s": timings,
              "total_s": round(time.perf_counter() - t0, 1),
              "after_sft_widths": _widths(os.path.join(out, "eval", "after_sft"))}
    write_outputs(cfg, report, log)
    return report


def _widths(folder: str) -> list[list[int]]:
    from npr.eval.runner import read_samples

    return [r["widths"] for r in read_samples(os.path.join(folder, "samples.jsonl")) if r["mode"] == "parallel"]


def format_table(rows: list[dict]) -> str:
    fmt = lambda v, pct=True: "-" if v is None else (f"{v:.0%}" if pct else f"{v:.1f}")  # noqa: E731
    lines = ["| phase | accuracy | trigger rate | mean width | tokens | critical path | speed-up |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        sp = r.get("wall_speedup")
        lines.append(f"| {r['phase']} | {fmt(r['accuracy'])} | {fmt(r['trigger_rate'])} | "
                     f"{fmt(r['mean_width'], False)} | {fmt(r['tokens'], False)} | {fmt(r['critical_path'], False)} | "
                     f"{'-' if sp is None else f'{sp:.2f}x'} |")
    return "\n".join(lines)


def write_outputs(cfg: DemoConfig, report: dict, log: Callable[[str], None]) -> None:
    from npr.eval.view import load_record, render_html, render_terminal

    out = cfg.output_dir
    samples = os.path.join(out, "eval", "after_papo", "samples.jsonl")
    record = load_record(samples, 0, {"mode": "parallel"})
    with open(os.path.join(out, "trajectory.html"), "w", encoding="utf-8") as f:
        f.write(render_html(record))
    log("\none held-out trajectory after PAPO (also trajectory.html):\n" + render_terminal(record))
    table = format_table(report["rows"])
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    try:
        make_plots(report, out)
    except ImportError as err:  # matplotlib is an optional extra
        log(f"(no plots: {err})")
    log("\n" + table)
    log(f"engine vs trainer log-probs on the PAPO rollouts: max |diff| {report['max_logprob_gap']:.1e}")
    log(f"total {report['total_s']:.0f}s: " + ", ".join(f"{k} {v:.0f}s" for k, v in report["timings_s"].items()))
    log(f"outputs in {out}/ (summary.md, report.json, plots/, trajectory.html, eval/*/report.md)")


def make_plots(report: dict, out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(os.path.join(out, "plots"), exist_ok=True)
    rows = report["rows"]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    names = [r["phase"] for r in rows]
    axes[0].bar(names, [100 * (r["accuracy"] or 0) for r in rows], color="tab:blue")
    axes[0].set_title("held-out accuracy (%)")
    axes[1].bar(names, [100 * (r["trigger_rate"] or 0) for r in rows], color="tab:green")
    axes[1].set_title("parallel trigger rate (%)")
    axes[0].set_ylim(0, 100)
    axes[1].set_ylim(0, 100)
    x = range(len(rows))
    axes[2].bar([i - 0.2 for i in x], [r["tokens"] or 0 for r in rows], 0.4, label="total tokens")
    axes[2].bar([i + 0.2 for i in x], [r["critical_path"] or 0 for r in rows], 0.4, label="critical path")
    axes[2].set_xticks(list(x), names)
    axes[2].legend()
    axes[2].set_title("tokens per response")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "plots", "demo.png"), dpi=100)
    plt.close(fig)
    log = report["sft"]["log"]
    if log:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.plot([e["step"] for e in log], [e["nll"] for e in log], marker="o")
        ax.set_xlabel("verl actor step")
        ax.set_ylabel("train NLL")
        ax.set_title("Stage 2 parallel SFT")
        fig.tight_layout()
        fig.savefig(os.path.join(out, "plots", "sft_loss.png"), dpi=100)
        plt.close(fig)
