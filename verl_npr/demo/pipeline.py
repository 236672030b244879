"""`npr demo`'s pipeline: the phases in order, each evaluated, through the code the GPU recipes run.

1. the task and a tiny random model prepared by `npr.prepare` (`task`, `actor.make_model`);
2. evaluation of the untrained model;
3. Stage 2: parallel SFT as updates of verl's real `ActorRolloutRefWorker` on gold trajectories
   (`actor`): the `npr_papo` loss with advantage 1 on every response token, whose ratio
   exp(logp - logp.detach()) makes the gradient SFT's token-mean cross-entropy gradient. (verl's
   `sft_trainer` is a torchrun subprocess, too slow to start for a demo of minutes.)
4. Stage 3: PAPO updates on fork-join rollouts (`stage3`);
5. evaluation after each stage by `npr.eval` (`evaluation`), the report, plots and one trajectory (`report`).
Every phase is seeded and runs a fixed number of steps, so the outcome does not depend on the load."""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable

from verl_npr.demo import task
from verl_npr.demo.actor import actor_log_probs, make_model, make_worker, update
from verl_npr.demo.config import DemoConfig
from verl_npr.demo.evaluation import evaluate, measure_speedup, metrics_row, widths_of
from verl_npr.demo.hosts import load_weights, make_engine, quiet_hosts, setup_env
from verl_npr.demo.report import write_outputs
from verl_npr.demo.stage3 import papo_iteration


@dataclass
class Run:
    """What every phase reads and appends to: the settings, the held-out split, the tokenizer, the HF model
    the actor's weights are copied into (saved per phase; the speed-up decoder), the engine, the log."""

    cfg: DemoConfig
    log: Callable[[str], None]
    test: list[dict]
    test_file: str
    tokenizer: Any
    templates: Any
    hf: Any
    engine: Any
    max_new: int
    rng: random.Random  # the stream of fresh training problems
    t0: float = field(default_factory=time.perf_counter)
    timings: dict[str, float] = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)

    @property
    def held_out(self) -> set[str]:
        return {p["question"] for p in self.test}

    def path(self, *parts: str) -> str:
        return os.path.join(self.cfg.output_dir, *parts)

    def done(self, name: str, start: float) -> None:
        """Record and log how long a phase took."""
        self.timings[name] = round(time.perf_counter() - start, 1)
        self.log(f"[{time.perf_counter() - self.t0:5.0f}s] {name}: done in {self.timings[name]:.1f}s")

    def fresh(self, count: int) -> list[dict]:
        return task.train_problems(self.rng, self.cfg, self.held_out, count)

    def publish(self, worker, folder: str) -> str:
        """The actor's weights into the engine and into the model folder output_dir/folder."""
        from verl_npr.local_actor import actor_state

        model_dir = self.path(folder)
        self.tokenizer.save_pretrained(model_dir)
        load_weights(self.engine, actor_state(worker), self.hf, model_dir)
        return model_dir

    def evaluate_trained(self, name: str, folder: str, model_dir: str) -> None:
        """Both modes on the held-out split, plus the fork-join speed-up on its first problems."""
        start = time.perf_counter()
        cfg = self.cfg
        self.rows.append(metrics_row(name, evaluate(cfg, self.engine, model_dir, self.test_file, folder,
                                                    ("parallel", "sequential"), self.max_new)))
        latency = self.rows[-1]["latency"] = measure_speedup(self.hf, self.tokenizer, self.test[:cfg.speed_problems],
                                                             self.max_new)
        self.log(f"eval {name}: accuracy {self.rows[-1]['accuracy']:.0%}, trigger rate "
                 f"{self.rows[-1]['trigger_rate']:.0%}; "
                 + (f"fork-join vs a sequential replay of the same tokens {latency['speedup']:.2f}x (ideal "
                    f"{latency['ideal']:.2f}x) on {latency['problems']} problems" if latency["problems"]
                    else "no trajectory stopped by itself, so no speed-up was measured"))
        self.done(f"eval {name}", start)


def run_demo(cfg: DemoConfig, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every phase; returns the report (also written to output_dir/report.json)."""
    log = log or (lambda line: print(line, flush=True))
    setup_env()
    quiet_hosts()
    import torch

    torch.manual_seed(cfg.seed)
    run = start_run(cfg, log)
    try:
        report = run_phases(run)
    finally:
        run.engine.close()
    report.update(timings_s=run.timings, total_s=round(time.perf_counter() - run.t0, 1))
    write_outputs(cfg, report, log)
    return report


def start_run(cfg: DemoConfig, log: Callable[[str], None]) -> Run:
    """Phases 1-2 of the module docstring: the held-out split (test.jsonl), the tiny model (model-init/),
    the engine on it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from npr.templates import Templates

    start = time.perf_counter()
    os.makedirs(cfg.output_dir, exist_ok=True)
    test = task.make_test_split(cfg)
    held_out = {p["question"] for p in test}
    test_file = os.path.join(cfg.output_dir, "test.jsonl")
    with open(test_file, "w") as f:
        for p in test:
            f.write(json.dumps({"question": p["question"], "answer": p["answer"]}) + "\n")
    init_dir = os.path.join(cfg.output_dir, "model-init")
    prepared = make_model(cfg, init_dir)
    tokenizer = AutoTokenizer.from_pretrained(init_dir)
    templates = Templates.from_tokenizer(tokenizer)
    example = task.train_problems(random.Random(f"demo-example-{cfg.seed}"), replace(cfg, min_numbers=cfg.max_numbers),
                                  held_out, 1)[0]
    longest = task.gold_sample(templates, tokenizer, example)
    with open(os.path.join(cfg.output_dir, "train_example.json"), "w") as f:
        json.dump({**example, "response": tokenizer.decode(longest.response_ids)}, f, indent=1)
    log(f"task: {cfg.num_test} held-out problems + fresh training problems of {cfg.min_numbers}-{cfg.max_numbers} "
        f"keyed digits in chunks of {cfg.chunk_size}; e.g. {example['question']!r} ->\n"
        + tokenizer.decode(longest.response_ids).replace("\n", "\n    ").join(["    ", ""]))
    tag_ids = prepared.tag_ids.as_dict().values()
    log(f"model: tiny random Qwen3 ({cfg.num_layers} layers, hidden {cfg.hidden_size}), {len(tokenizer)} tokens, the "
        f"eight tags added by npr.prepare (ids {min(tag_ids)}-{max(tag_ids)})")
    hf = AutoModelForCausalLM.from_pretrained(init_dir, dtype=torch.float32).eval()
    engine = make_engine(cfg, init_dir)
    run = Run(cfg, log, test, test_file, tokenizer, templates, hf, engine, len(longest.response_ids) + 24,
              random.Random(f"demo-train-{cfg.seed}"))
    run.done(f"task, model and {cfg.engine} engine", start)
    return run


def run_phases(run: Run) -> dict[str, Any]:
    cfg = run.cfg
    init_dir = run.path("model-init")
    start = time.perf_counter()
    run.rows.append(metrics_row("untrained", evaluate(cfg, run.engine, init_dir, run.test_file, "untrained",
                                                      ("parallel",), run.max_new)))
    run.log(f"eval untrained: accuracy {run.rows[-1]['accuracy']:.0%}, trigger rate {run.rows[-1]['trigger_rate']:.0%}")
    run.done("eval untrained", start)

    # 3. Stage 2: parallel SFT through verl's actor
    start = time.perf_counter()
    import verl  # noqa: F401  (its plugin entry point registers platform cpu, attention npr, npr_papo)

    # verl needs every batch (SFT, PAPO rollouts) to be a multiple of the micro-batch size
    with open(run.path("verl.log"), "a") as verl_log, \
            contextlib.redirect_stdout(verl_log), contextlib.redirect_stderr(verl_log):
        worker = make_worker(init_dir, cfg, math.gcd(cfg.sft_batch, cfg.papo_prompts * cfg.papo_group))
    run.log(f"verl ActorRolloutRefWorker (fsdp2, cpu platform, attention npr) ready in {time.perf_counter() - start:.1f}s")
    sft_log = sft(run, worker)
    sft_dir = run.publish(worker, "model-sft")
    run.done(f"Stage 2: {cfg.sft_steps} verl actor updates of {cfg.sft_batch} gold trajectories", start)
    run.evaluate_trained("after SFT", "after_sft", sft_dir)

    # 4. Stage 3: PAPO on fork-join rollouts
    start = time.perf_counter()
    papo_log = papo(run, worker)  # the engine and model-papo/ hold the weights of each update
    papo_dir = run.publish(worker, "model-papo") if not papo_log else run.path("model-papo")
    run.done(f"Stage 3: {cfg.papo_steps} PAPO updates", start)
    run.evaluate_trained("after PAPO", "after_papo", papo_dir)
    gaps = [r["logprob_gap"] for r in papo_log]
    return {"config": asdict(cfg), "rows": run.rows, "sft": {"steps": cfg.sft_steps, "log": sft_log}, "papo": papo_log,
            "max_logprob_gap": max(gaps) if gaps else None,
            "after_sft_widths": widths_of(run.path("eval", "after_sft"))}


def sft(run: Run, worker) -> list[dict]:
    """sft_steps actor updates on batches of fresh gold trajectories; the batch NLL every 25 steps."""
    import torch

    from verl_npr.batch import make_data_proto

    cfg, history = run.cfg, []
    t = time.perf_counter()
    for step in range(1, cfg.sft_steps + 1):
        golds = [task.gold_sample(run.templates, run.tokenizer, p) for p in run.fresh(cfg.sft_batch)]
        data = make_data_proto(golds, run.tokenizer.pad_token_id)
        mask = data.batch["response_mask"].float()
        m = update(worker, data, mask.clone(), torch.zeros_like(mask), step)
        if step % 25 == 0 or step in (1, cfg.sft_steps):
            nll = float(-(actor_log_probs(worker, data) * mask).sum() / mask.sum())
            history.append({"step": step, "nll": nll, "grad_norm": m.get("grad_norm"), "lr": m.get("lr"),
                            "s": round(time.perf_counter() - t, 1)})
            if step % 50 == 0 or step in (1, cfg.sft_steps):
                run.log(f"  SFT step {step}/{cfg.sft_steps}: token-mean NLL of the batch just trained on {nll:.3f} "
                        f"({time.perf_counter() - t:.0f}s)")
    return history


def papo(run: Run, worker) -> list[dict]:
    """papo_steps PAPO iterations on fresh problems, the engine reloaded after each update."""
    cfg, history = run.cfg, []
    for it in range(cfg.papo_steps):
        record = papo_iteration(worker, run.engine, run.tokenizer, run.templates, run.fresh(cfg.papo_prompts), cfg,
                                run.max_new, seed=cfg.seed * 1000 + it, step=cfg.sft_steps + 1 + it)
        run.publish(worker, "model-papo")
        history.append({"iteration": it + 1, **record})
        run.log(f"  PAPO {it + 1}/{cfg.papo_steps}: {record['rollouts']} rollouts, correct {record['correct']:.0%}, "
                f"valid {record['valid']}, engine vs actor max |dlogp| {record['logprob_gap']:.1e}")
    return history
