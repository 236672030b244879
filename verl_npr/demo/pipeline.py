"""`npr demo`'s pipeline: the paper's pipeline in miniature, each phase evaluated, through the code the GPU
recipes run.

1. the task and a tiny random model prepared by `npr.prepare` (`task`, `actor.make_model`);
2. phase 0, the "instruct" prelude: SFT through verl's real `ActorRolloutRefWorker` on mostly sequential
   solutions, the parallel format only sometimes under the instruction (what Qwen3-4B-Instruct is to the
   paper: a model that solves the task but rarely writes the parallel format). SFT is the `npr_papo` loss
   with advantage 1 on every response token, whose ratio exp(logp - logp.detach()) makes the gradient
   SFT's token-mean cross-entropy gradient (verl's `sft_trainer` is a torchrun subprocess, too slow to
   start for a demo of minutes);
3. Stage 1 (NPR-Zero): GRPO updates on fork-join rollouts with the format-gated Stage-1 reward (`rl`);
4. Stage 2: rejection sampling from the Stage-1 model (`npr.rejection`: `npr sample`'s keep rule, records
   and SFT rows), then SFT on those self-distilled trajectories only;
5. Stage 3: PAPO updates on fork-join rollouts (`rl`);
6. evaluation after each phase by `npr.eval` (`evaluation`): greedy accuracy in parallel and sequential
   modes, sampled accuracy avg@n at temperature 1, trigger rate, widths, critical path; the report, plots
   and one trajectory (`report`).
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
from verl_npr.demo.actor import actor_log_probs, fresh_optimizer, make_model, make_worker, sft_lr_at, update
from verl_npr.demo.config import DemoConfig
from verl_npr.demo.evaluation import evaluate, measure_speedup, metrics_row, widths_of
from verl_npr.demo.hosts import load_weights, make_engine, quiet_hosts, setup_env
from verl_npr.demo.report import write_outputs
from verl_npr.demo.rl import STAGES, rl_iteration


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
    updates: int = 0  # actor updates so far, every phase (each update's seed)

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

    def evaluate_phase(self, name: str, folder: str, model_dir: str, speedup: bool = False) -> None:
        """Greedy in both modes and avg@eval_samples at temperature 1 (parallel) on the held-out split; with
        `speedup`, the fork-join speed-up on its first problems."""
        start = time.perf_counter()
        cfg = self.cfg
        greedy = evaluate(cfg, self.engine, model_dir, self.test_file, folder, ("parallel", "sequential"), self.max_new)
        sampled = evaluate(cfg, self.engine, model_dir, self.test_file, folder + "_sampled", ("parallel",),
                           self.max_new, n=cfg.eval_samples, temperature=1.0)
        row = metrics_row(name, greedy, sampled)
        self.rows.append(row)
        line = (f"eval {name}: greedy accuracy {row['accuracy']:.0%} (sequential mode {row['sequential_accuracy']:.0%}), "
                f"trigger rate {row['trigger_rate']:.0%}; sampled (avg@{cfg.eval_samples}, T=1) accuracy "
                f"{row['sampled_accuracy']:.0%}, trigger rate {row['sampled_trigger_rate']:.0%}")
        if speedup:
            latency = row["latency"] = measure_speedup(self.hf, self.tokenizer, self.test[:cfg.speed_problems],
                                                       self.max_new)
            line += ("; " + (f"fork-join vs a sequential replay of the same tokens {latency['speedup']:.2f}x (ideal "
                             f"{latency['ideal']:.2f}x) on {latency['problems']} problems" if latency["problems"]
                             else "no trajectory stopped by itself, so no speed-up was measured"))
        self.log(line)
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

    start = time.perf_counter()
    import verl  # noqa: F401  (its plugin entry point registers platform cpu, attention npr, npr_papo)

    # verl needs every batch (SFT, rollouts) to be a multiple of the micro-batch size
    micro = math.gcd(cfg.sft_batch, cfg.stage1_prompts * cfg.stage1_group, cfg.papo_prompts * cfg.papo_group)
    with open(run.path("verl.log"), "a") as verl_log, \
            contextlib.redirect_stdout(verl_log), contextlib.redirect_stderr(verl_log):
        worker = make_worker(init_dir, cfg, micro)
    run.log(f"verl ActorRolloutRefWorker (fsdp2, cpu platform, attention npr) ready in {time.perf_counter() - start:.1f}s")
    report: dict[str, Any] = {"config": asdict(cfg)}

    # phase 0: the "instruct" model
    rng = random.Random(f"demo-instruct-mix-{cfg.seed}")
    mix = lambda: [task.instruct_sample(run.templates, run.tokenizer, p, rng, cfg)  # noqa: E731
                   for p in run.fresh(cfg.sft_batch)]
    report["instruct"] = {"steps": cfg.instruct_steps,
                          "log": sft(run, worker, "instruct", cfg.instruct_steps, cfg.sft_lr, mix)}
    run.done(f"phase 0 (instruct model): {cfg.instruct_steps} verl actor updates", start)
    run.evaluate_phase("instruct", "instruct", run.publish(worker, "model-instruct"))

    # Stage 1: GRPO with the format-gated reward
    start = time.perf_counter()
    report["stage1"] = {"steps": cfg.stage1_steps,
                        "log": rl(run, worker, "zero", cfg.stage1_steps, cfg.stage1_prompts, cfg.stage1_group,
                                  cfg.stage1_lr, "model-stage1", 0)}
    run.done(f"Stage 1: {cfg.stage1_steps} GRPO updates", start)
    run.evaluate_phase("after Stage 1", "after_stage1", run.path("model-stage1"))

    # Stage 2: rejection sampling from the Stage-1 model, SFT on what it kept
    start = time.perf_counter()
    kept, report["stage2_sampling"] = rejection_sample(run)
    run.done(f"Stage 2 sampling: {report['stage2_sampling']['kept']}/{report['stage2_sampling']['tried']} kept", start)
    start = time.perf_counter()
    pick = random.Random(f"demo-stage2-{cfg.seed}")
    report["sft"] = {"steps": cfg.sft_steps, "rows": len(kept),
                     "log": sft(run, worker, "Stage 2 SFT", cfg.sft_steps, cfg.stage2_lr,
                                lambda: [kept[pick.randrange(len(kept))] for _ in range(cfg.sft_batch)])}
    run.done(f"Stage 2 SFT: {cfg.sft_steps} verl actor updates on the {len(kept)} kept trajectories", start)
    run.evaluate_phase("after SFT", "after_sft", run.publish(worker, "model-sft"), speedup=True)

    # Stage 3: PAPO
    start = time.perf_counter()
    report["papo"] = rl(run, worker, "papo", cfg.papo_steps, cfg.papo_prompts, cfg.papo_group, cfg.papo_lr,
                        "model-papo", 1000)
    run.done(f"Stage 3: {cfg.papo_steps} PAPO updates", start)
    run.evaluate_phase("after PAPO", "after_papo", run.path("model-papo"), speedup=True)
    gaps = [r["logprob_gap"] for r in report["stage1"]["log"] + report["papo"]]
    report.update(rows=run.rows, max_logprob_gap=max(gaps) if gaps else None,
                  after_sft_widths=widths_of(run.path("eval", "after_sft")))
    return report


def sft(run: Run, worker, name: str, steps: int, peak_lr: float, batch: Callable[[], list]) -> list[dict]:
    """`steps` actor updates on `batch()` rows at SFT's schedule to `peak_lr` (`sft_lr_at`); the batch NLL every
    25 steps."""
    import torch

    from verl_npr.batch import make_data_proto
    from verl_npr.local_actor import set_lr

    history, t = [], time.perf_counter()
    fresh_optimizer(worker)
    for step in range(1, steps + 1):
        data = make_data_proto(batch(), run.tokenizer.pad_token_id)
        mask = data.batch["response_mask"].float()
        set_lr(worker, sft_lr_at(step, steps, peak_lr, run.cfg))
        run.updates += 1
        m = update(worker, data, mask.clone(), torch.zeros_like(mask), run.updates)
        if step % 25 == 0 or step in (1, steps):
            nll = float(-(actor_log_probs(worker, data) * mask).sum() / mask.sum())
            history.append({"step": step, "nll": nll, "grad_norm": m.get("grad_norm"), "lr": m.get("lr"),
                            "s": round(time.perf_counter() - t, 1)})
            if step % 50 == 0 or step in (1, steps):
                run.log(f"  {name} step {step}/{steps}: token-mean NLL of the batch just trained on {nll:.3f} "
                        f"({time.perf_counter() - t:.0f}s)")
    return history


def rl(run: Run, worker, stage: str, steps: int, prompts: int, group: int, lr: float, folder: str,
       seed_offset: int) -> list[dict]:
    """`steps` RL iterations of the stage on fresh problems; the weights of each update go to the engine and to
    output_dir/folder (the folder holds the weights it starts from when steps is 0)."""
    cfg, history = run.cfg, []
    fresh_optimizer(worker)
    if not steps:
        run.publish(worker, folder)
    for it in range(steps):
        run.updates += 1
        record = rl_iteration(stage, worker, run.engine, run.tokenizer, run.templates, run.fresh(prompts), group, lr,
                              run.max_new, seed=cfg.seed * 10_000 + seed_offset + it, step=run.updates)
        run.publish(worker, folder)
        history.append({"iteration": it + 1, **record})
        run.log(f"  {STAGES[stage]} {it + 1}/{steps}: {record['rollouts']} rollouts, correct "
                f"{record['correct']:.0%}, parallel format {record['trigger_rate']:.0%}, mean reward "
                f"{record['mean_reward']:+.2f}, engine vs actor max |dlogp| {record['logprob_gap']:.1e}")
    return history


def rejection_sample(run: Run) -> tuple[list, dict]:
    """`npr sample`'s code on fresh problems: sample_trials trials each from the Stage-1 model (temperature 1),
    kept iff correct and format-valid (`npr.rejection`'s judge with reward's grader), records in
    output_dir/stage2/records.jsonl; the kept trajectories as SFT rows (canonical ids, validated layouts)."""
    from npr.eval.engines import Sampling
    from npr.graders import load_grader
    from npr.layout import build_layout
    from npr.rejection import Problem, RejectionSampler, make_judge, sft_rows
    from verl_npr.batch import Sample
    from verl_npr.demo.config import MAX_BRANCHES

    cfg = run.cfg
    problems = [Problem(f"{task.BENCHMARK}-train-{i}", [{"role": "user", "content": p["question"]}], p["answer"],
                        task.BENCHMARK) for i, p in enumerate(run.fresh(cfg.sample_problems))]
    records = run.path("stage2", "records.jsonl")
    if os.path.exists(records):
        os.remove(records)  # a rerun into the same folder samples afresh (its own problems and model)
    sampling = Sampling(temperature=1.0, top_p=1.0, max_new_tokens=run.max_new, max_branches=MAX_BRANCHES)
    sampler = RejectionSampler(run.engine, make_judge(load_grader("reward"), MAX_BRANCHES), run.tokenizer,
                               cfg.sample_trials, cfg.seed, concurrency=32, sampling=sampling)
    summary = sampler.run(problems, records, progress=False)
    rows = sft_rows(records, run.tokenizer, summary=summary)
    samples = []
    for row in rows:
        layout = build_layout(row["prompt_ids"] + row["response_ids"], run.templates.tags, len(row["prompt_ids"]))
        samples.append(Sample(row["prompt_ids"], row["response_ids"], layout, True))
    info = {"tried": summary.num_trials, "kept": summary.num_kept, "acceptance_rate": summary.acceptance_rate,
            "correct": summary.num_correct, "format_valid": summary.num_format_ok,
            "problems_kept": summary.num_problems_kept, "problems": summary.num_problems, "sft_rows": len(samples),
            "dropped": summary.dropped, "records": records}
    run.log(f"Stage 2 sampling: {info['kept']}/{info['tried']} trials kept ({info['acceptance_rate']:.0%}; correct "
            f"{info['correct']}, format-valid {info['format_valid']}), from {info['problems_kept']}/{info['problems']} "
            "problems")
    if not samples:
        raise RuntimeError("Stage 2 kept no trajectory: the Stage-1 model wrote no correct, well-formed sample; "
                           "raise stage1_steps or sample_trials")
    return samples, info
