"""`npr demo`: the NPR pipeline in miniature on a CPU, through the code the GPU recipes run.

1. A synthetic task with a genuine parallel decomposition, "Sum: a7 b1 c5 d9 ...": one `<plan>` per
   chunk of keyed digits, one `<step>` per chunk adding its digits (each blind to its siblings), a
   `<takeaway>` adding the partial sums, then `\\boxed{}` — built with `Templates`, with a held-out split.
   The keys (a, b, c, ...) make every copy an exact lookup, so a tiny model can learn it in minutes.
2. A tiny random Qwen3 and byte-level tokenizer made locally, given the tag tokens by `npr.prepare`.
3. Stage 2: parallel SFT as updates of verl's real `ActorRolloutRefWorker` (fsdp2, the plugin's cpu
   platform, attention `npr`, verl's cosine schedule) on gold trajectories, with the `npr_papo` loss and
   advantage 1 on every response token: its ratio exp(logp - logp.detach()) makes the gradient SFT's
   token-mean cross-entropy gradient. (verl's `sft_trainer` is a torchrun subprocess, too slow to start
   for a demo of minutes.)
4. Stage 3: PAPO updates: rollouts from the fork-join engine (the reference decoder, or SGLang with the
   NPR plugin), Stage-3 rewards from `reward`, advantages from the registered `npr_papo` estimator, the
   update through the same actor; the engine's log-probs are checked against the actor's.
5. Evaluation by `npr.eval` in both modes before SFT, after SFT and after PAPO; a trajectory as a tree
   and as HTML; summary table, report and plots in the output folder.

Every phase is seeded and runs a fixed number of steps, so the outcome does not depend on the load."""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable

QUESTION_PREFIX = "Sum: "
KEYS = "abcdefghijklmnopqrstuvwxyz"
BENCHMARK = "demo_sum"
MAX_BRANCHES = 5
# verl's padded path: the packed one (use_remove_padding) computes float32 log-probs without flash-attn
# in a Python loop over rows in verl 0.9.1, several times slower on a CPU
USE_REMOVE_PADDING = False


@dataclass(frozen=True)
class DemoConfig:
    output_dir: str = "out/demo"
    seed: int = 0
    engine: str = "reference"
    min_numbers: int = 6
    max_numbers: int = 12
    chunk_size: int = 3
    num_test: int = 32
    sft_steps: int = 340
    sft_batch: int = 32
    sft_lr: float = 3e-3
    sft_warmup: int = 20
    papo_steps: int = 4
    papo_prompts: int = 2
    papo_group: int = 16
    papo_lr: float = 1e-5
    hidden_size: int = 128
    num_layers: int = 2
    speed_problems: int = 8

    def __post_init__(self):
        if self.engine not in ("reference", "sglang"):
            raise ValueError(f"engine must be 'reference' or 'sglang', got {self.engine!r}")
        if self.chunk_size < 1 or not 1 <= self.min_numbers <= self.max_numbers <= len(KEYS):
            raise ValueError(f"need chunk_size >= 1 and 1 <= min_numbers <= max_numbers <= {len(KEYS)}, got "
                             f"{self.chunk_size}, {self.min_numbers}, {self.max_numbers}")
        fewest, most = -(-self.min_numbers // self.chunk_size), -(-self.max_numbers // self.chunk_size)
        if fewest < 2 or most > MAX_BRANCHES:
            raise ValueError(f"{self.min_numbers}-{self.max_numbers} numbers in chunks of {self.chunk_size} give "
                             f"{fewest}-{most} plans; the demo needs 2-{MAX_BRANCHES} (a fork of width >= 2, at most "
                             "max_branches): change the range or chunk_size")
        for name in ("num_test", "sft_steps", "sft_batch", "papo_prompts", "hidden_size", "num_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.papo_steps < 0 or self.papo_group < 2:
            raise ValueError(f"need papo_steps >= 0 and papo_group >= 2 (advantages compare group members), got "
                             f"{self.papo_steps}, {self.papo_group}")
        if self.hidden_size % 4:
            raise ValueError(f"hidden_size must be a multiple of 4 (4 heads), got {self.hidden_size}")


# test-suite size: fewer, shorter problems (2-3 plans) and fewer steps
FAST = dict(min_numbers=4, max_numbers=6, chunk_size=2, num_test=16, sft_steps=200, papo_steps=2, papo_prompts=2,
            papo_group=4)


# -- the task ----------------------------------------------------------------------------------------------
def make_problem(rng: random.Random, cfg: DemoConfig) -> dict[str, Any]:
    """One problem and its gold parallel solution (the parts Templates.block_ids takes)."""
    numbers = [rng.randint(1, 9) for _ in range(rng.randint(cfg.min_numbers, cfg.max_numbers))]
    chunks = [list(range(i, min(i + cfg.chunk_size, len(numbers)))) for i in range(0, len(numbers), cfg.chunk_size)]
    plans, steps, sums = [], [], []
    for k, chunk in enumerate(chunks, 1):
        plans.append(f"{k}: " + "+".join(KEYS[i] for i in chunk))
        total, text = numbers[chunk[0]], f" {KEYS[chunk[0]]}{numbers[chunk[0]]}"
        for i in chunk[1:]:
            total += numbers[i]
            text += f"+{KEYS[i]}{numbers[i]}={total}"
        steps.append(text if len(chunk) > 1 else f"{text}={total}")
        sums.append(total)
    total, takeaway = sums[0], str(sums[0])
    for s in sums[1:]:
        total += s
        takeaway += f"+{s}={total}"
    return {"question": QUESTION_PREFIX + " ".join(f"{KEYS[i]}{d}" for i, d in enumerate(numbers)),
            "answer": str(total), "plans": plans, "steps": steps, "takeaway": takeaway,
            "final": f"\n\\boxed{{{total}}}"}


def make_test_split(cfg: DemoConfig) -> list[dict[str, Any]]:
    """num_test distinct problems from their own seed stream."""
    rng = random.Random(f"demo-test-{cfg.seed}")
    test, seen = [], set()
    while len(test) < cfg.num_test:
        p = make_problem(rng, cfg)
        if p["question"] not in seen:
            seen.add(p["question"])
            test.append(p)
    return test


def train_problems(rng: random.Random, cfg: DemoConfig, held_out: set[str], count: int) -> list[dict[str, Any]]:
    """count fresh training problems; a held-out question is never trained on."""
    out = []
    while len(out) < count:
        p = make_problem(rng, cfg)
        if p["question"] not in held_out:
            out.append(p)
    return out


def prompt_ids(tokenizer, question: str) -> list[int]:
    """The prompt exactly as `npr eval` builds it: the question alone, through the chat template."""
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
    if not layout.is_valid:
        raise RuntimeError(f"the gold trajectory of {problem['question']!r} has an invalid layout "
                           f"({layout.error}): the task builder is broken")
    return Sample(prompt, response, layout, True)


# -- model -------------------------------------------------------------------------------------------------
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


# -- verl's actor, in this process (verl_npr.local_actor) -------------------------------------------------
def quiet_hosts() -> None:
    """Keep the demo's progress readable: no weight-loading progress bars, no warnings about optional verl
    engines (torchtitan, megatron, ...) or CUDA-only SGLang kernels that a CPU run never uses. verl's
    start-up prints go to verl.log."""
    import logging
    import threading
    import warnings

    import datasets
    import tqdm
    from transformers.utils import logging as hf_logging

    warnings.filterwarnings("ignore", message=r".* engine is not available")
    for message in ("Only CUDA", "Triton is not supported"):  # SGLang on a CPU (its subprocesses: make_engine)
        warnings.filterwarnings("ignore", message=message, category=UserWarning)
    logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)  # a deprecation note on each update
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    # tqdm's default lock holds a multiprocessing semaphore, registered with multiprocessing's resource
    # tracker; SGLang's shutdown kills every child process, that tracker included, and the tracker relaunched
    # at exit prints a KeyError traceback (harmless, but it reads like a crash). A thread lock is all the
    # demo's progress bars (datasets' thread_map) need.
    tqdm.tqdm.set_lock(threading.RLock())


def setup_env() -> None:
    """verl picks its platform on first import: the plugin's cpu platform, one local rank."""
    from verl_npr.local_actor import setup_env as setup

    setup("cpu")


def make_worker(model_dir: str, cfg: DemoConfig, micro_batch: int):
    """verl's actor on model_dir with the SFT learning rate under verl's cosine schedule (warm-up, then down
    to a tenth over sft_steps)."""
    from verl_npr.local_actor import ACTOR, actor_config
    from verl_npr.local_actor import make_worker as make

    schedule = [f"{ACTOR}.optim.lr_scheduler_type=cosine", f"{ACTOR}.optim.lr_warmup_steps={cfg.sft_warmup}",
                f"{ACTOR}.optim.total_training_steps={cfg.sft_steps}", f"{ACTOR}.optim.min_lr_ratio=0.1"]
    return make(actor_config(model_dir, cfg.sft_batch, micro_batch, lr=cfg.sft_lr, clip_grad=1.0,
                             use_remove_padding=USE_REMOVE_PADDING, overrides=schedule))


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


# -- the fork-join engine ----------------------------------------------------------------------------------
def make_engine(cfg: DemoConfig, model_dir: str):
    """The engine every evaluation and every PAPO rollout uses (npr.eval's engine classes)."""
    from npr.eval import ReferenceEngine, SGLangEngine

    if cfg.engine == "reference":
        return ReferenceEngine(model_dir, "cpu", "float32")
    # SGLang's real engine on the CPU: scheduler subprocess, KV pool, the NPR backend over torch_native.
    # Its subprocesses warn at import that CUDA-only quantizations and Triton are unavailable: not for a CPU run.
    os.environ.setdefault("PYTHONWARNINGS", "ignore:Only CUDA:UserWarning,ignore:Triton is not supported:UserWarning")
    return SGLangEngine(model_dir, attention_backend="npr", disable_overlap_schedule=True, device="cpu",
                        disable_cuda_graph=True, dtype="float32", mem_fraction_static=0.3, max_total_tokens=16384,
                        max_running_requests=64, log_level="error", random_seed=cfg.seed,
                        sleep_on_idle=True)  # an idle scheduler otherwise spins a core the trainer needs


def load_weights(engine, state: dict[str, Any], hf_model, model_dir: str) -> None:
    """Put the actor's weights into the HF model (saved to model_dir) and into the engine."""
    missing, unexpected = hf_model.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if "rotary" not in k]:
        raise RuntimeError(f"the actor's parameters do not match the model: missing {missing}, unexpected {unexpected}")
    hf_model.save_pretrained(model_dir)
    if engine.name == "reference":
        engine.model.load_state_dict(hf_model.state_dict())
    else:
        ok, message = engine.engine.update_weights_from_disk(model_dir)[:2]
        if not ok:
            raise RuntimeError(f"SGLang did not load the weights from {model_dir}: {message}")


def evaluate(cfg: DemoConfig, engine, model_dir: str, test_file: str, name: str, modes: tuple[str, ...],
             max_new: int) -> dict[str, Any]:
    from npr.eval import run_eval
    from npr.eval.config import EvalConfig

    ecfg = EvalConfig(benchmarks=({"name": BENCHMARK, "source": test_file},), engine=cfg.engine, model=model_dir,
                      modes=modes, n=1, temperature=0.0, top_p=1.0, max_new_tokens=max_new, max_branches=MAX_BRANCHES,
                      seed=cfg.seed, pass_k=(1,), output_dir=os.path.join(cfg.output_dir, "eval", name),
                      dtype="float32", progress=False)
    return run_eval(ecfg, engine=engine)


def metrics_row(name: str, summary: dict) -> dict[str, Any]:
    res = summary["results"][BENCHMARK]
    par = res.get("parallel", {})
    row = {"phase": name, "accuracy": par.get("avg_at_k"), "trigger_rate": par.get("trigger_rate"),
           "mean_width": par.get("mean_width"), "tokens": par.get("tokens_per_response"),
           "critical_path": par.get("critical_path_per_response")}
    if "sequential" in res:
        row["sequential_accuracy"] = res["sequential"].get("avg_at_k")
    speed = (summary.get("speedup") or {}).get(BENCHMARK)
    if speed:
        row["wall_speedup"] = speed.get("wall_speedup")
    return row


def measure_speedup(model, tokenizer, problems: list[dict], max_new: int) -> dict[str, Any]:
    """Wall-clock speed-up of fork-join decoding over decoding the same tokens sequentially: each problem is
    decoded greedily by the reference fork-join decoder (batch 1), then its linearised ids are replayed
    by the same decoder in sequential mode (ForcedTokens). A trajectory that did not stop by itself is
    skipped. Returns the summed times, their ratio and the ideal ratio (total / critical-path tokens)."""
    from npr.decoding import Decoder, DecodingConfig, SamplingParams, sequential_replay

    greedy = SamplingParams(temperature=0.0)
    fork_join = Decoder(model, tokenizer, DecodingConfig(max_branches=MAX_BRANCHES, max_new_tokens=max_new))
    prompts = [prompt_ids(tokenizer, p["question"]) for p in problems]
    fork_join.generate(prompts[:1], greedy)  # warm-up, untimed
    fj_s = seq_s = 0.0
    total = critical = count = 0
    for prompt in prompts:
        t = time.perf_counter()
        [result] = fork_join.generate([prompt], greedy)
        fj_time = time.perf_counter() - t
        if result.finish_reason != "stop":
            continue
        n = result.stats["total_tokens"]
        sequential, forced = sequential_replay(model, tokenizer, result)
        t = time.perf_counter()
        [replay] = sequential.generate([prompt], greedy, processors=forced)
        seq_time = time.perf_counter() - t
        if list(replay.token_ids) != list(result.token_ids):
            raise RuntimeError("the sequential replay decoded other ids than the fork-join trajectory")
        fj_s, seq_s, count = fj_s + fj_time, seq_s + seq_time, count + 1
        total, critical = total + n, critical + result.stats["critical_path_tokens"]
    return {"problems": count, "fork_join_s": round(fj_s, 3), "sequential_s": round(seq_s, 3),
            "speedup": seq_s / fj_s if fj_s else None, "ideal": total / critical if critical else None}


# -- Stage 3 -----------------------------------------------------------------------------------------------
def papo_iteration(worker, engine, tokenizer, templates, problems: list[dict], cfg: DemoConfig, max_new: int,
                   seed: int, step: int) -> dict[str, Any]:
    """Rollouts of each problem (papo_group each) from the engine, Stage-3 rewards, npr_papo advantages, one
    actor update. Returns the iteration's record, with the engine-vs-actor log-prob gap on its rollouts."""
    import torch

    from npr.eval.engines import Sampling
    from reward import stage_reward
    from verl_npr.batch import Sample, make_data_proto
    from verl_npr.papo import compute_papo_advantage

    prompts = [prompt_ids(tokenizer, p["question"]) for p in problems for _ in range(cfg.papo_group)]
    sampling = Sampling(temperature=1.0, top_p=1.0, max_new_tokens=max_new, max_branches=MAX_BRANCHES)
    outputs = engine.generate(prompts, sampling, "parallel", seed)
    samples, rewards = [], []
    for i, out in enumerate(outputs):
        traj = out.trajectory
        layout = traj.layout(templates.tags)
        samples.append(Sample(list(traj.prompt_ids), list(traj.token_ids), layout,
                              bool(layout.is_valid) and traj.finish_reason == "stop", list(traj.logprobs)))
        rewards.append(float(stage_reward(out.text, problems[i // cfg.papo_group]["answer"], stage="papo")["score"]))
    data = make_data_proto(samples, tokenizer.pad_token_id)
    mask = data.batch["response_mask"]
    token_rewards = torch.zeros(mask.shape, dtype=torch.float32)
    for row, sample in enumerate(samples):
        token_rewards[row, len(sample.response_ids) - 1] = rewards[row]
    advantages, _ = compute_papo_advantage(token_rewards, mask, index=[i // cfg.papo_group for i in range(len(samples))])
    engine_lp = data.batch["rollout_log_probs"].float()
    trainer_lp = actor_log_probs(worker, data)
    real = torch.zeros(mask.shape, dtype=torch.bool)
    for row, sample in enumerate(samples):
        real[row, :len(sample.response_ids)] = True
    gap = float((trainer_lp - engine_lp)[real].abs().max())
    from verl_npr.local_actor import set_lr

    set_lr(worker, cfg.papo_lr)
    metrics = update(worker, data, advantages, engine_lp, step)
    widths = [out.trajectory.stats.get("max_width", 1) for out in outputs]
    return {"rollouts": len(samples), "correct": sum(r > 0 for r in rewards) / len(rewards),
            "mean_reward": sum(rewards) / len(rewards), "valid": sum(s.is_valid for s in samples),
            "min_width": min(widths), "logprob_gap": gap, **metrics}


# -- the pipeline ------------------------------------------------------------------------------------------
def run_demo(cfg: DemoConfig, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every phase; returns the report (also written to output_dir/report.json)."""
    log = log or (lambda line: print(line, flush=True))
    setup_env()
    quiet_hosts()
    import torch

    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    out = cfg.output_dir
    os.makedirs(out, exist_ok=True)

    def phase(name: str, start: float) -> None:
        timings[name] = round(time.perf_counter() - start, 1)
        log(f"[{time.perf_counter() - t0:5.0f}s] {name}: done in {timings[name]:.1f}s")

    # 1-2. task and model
    start = time.perf_counter()
    test = make_test_split(cfg)
    held_out = {p["question"] for p in test}
    test_file = os.path.join(out, "test.jsonl")
    with open(test_file, "w") as f:
        for p in test:
            f.write(json.dumps({"question": p["question"], "answer": p["answer"]}) + "\n")
    init_dir = os.path.join(out, "model-init")
    prepared = make_model(cfg, init_dir)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from npr.templates import Templates
    from verl_npr.batch import make_data_proto

    tokenizer = AutoTokenizer.from_pretrained(init_dir)
    templates = Templates.from_tokenizer(tokenizer)
    rng = random.Random(f"demo-train-{cfg.seed}")
    example = train_problems(random.Random(f"demo-example-{cfg.seed}"), replace(cfg, min_numbers=cfg.max_numbers),
                             held_out, 1)[0]
    longest = gold_sample(templates, tokenizer, example)
    max_new = len(longest.response_ids) + 24
    with open(os.path.join(out, "train_example.json"), "w") as f:
        json.dump({**example, "response": tokenizer.decode(longest.response_ids)}, f, indent=1)
    log(f"task: {cfg.num_test} held-out problems + fresh training problems of {cfg.min_numbers}-{cfg.max_numbers} "
        f"keyed digits in chunks of {cfg.chunk_size}; e.g. {example['question']!r} ->\n"
        + tokenizer.decode(longest.response_ids).replace("\n", "\n    ").join(["    ", ""]))
    log(f"model: tiny random Qwen3 ({cfg.num_layers} layers, hidden {cfg.hidden_size}), {len(tokenizer)} tokens, the "
        f"eight tags added by npr.prepare (ids {min(prepared.tag_ids.as_dict().values())}-{max(prepared.tag_ids.as_dict().values())})")
    hf = AutoModelForCausalLM.from_pretrained(init_dir, dtype=torch.float32).eval()
    engine = make_engine(cfg, init_dir)
    phase(f"task, model and {cfg.engine} engine", start)
    try:
        report = _phases(cfg, engine, hf, tokenizer, templates, rng, test, test_file, init_dir, max_new, log, phase,
                         make_data_proto)
    finally:
        engine.close()
    report.update(timings_s=timings, total_s=round(time.perf_counter() - t0, 1))
    write_outputs(cfg, report, log)
    return report


def _phases(cfg, engine, hf, tokenizer, templates, rng, test, test_file, init_dir, max_new, log, phase,
            make_data_proto) -> dict[str, Any]:
    import torch

    from verl_npr.local_actor import actor_state

    held_out = {p["question"] for p in test}

    start = time.perf_counter()
    rows = [metrics_row("untrained", evaluate(cfg, engine, init_dir, test_file, "untrained", ("parallel",), max_new))]
    log(f"eval untrained: accuracy {rows[-1]['accuracy']:.0%}, trigger rate {rows[-1]['trigger_rate']:.0%}")
    phase("eval untrained", start)

    # 3. Stage 2: parallel SFT through verl's actor
    start = time.perf_counter()
    import verl  # noqa: F401  (its plugin entry point registers platform cpu, attention npr, npr_papo)

    # verl needs every batch (SFT, PAPO rollouts) to be a multiple of the micro-batch size
    with open(os.path.join(cfg.output_dir, "verl.log"), "a") as verl_log, \
            contextlib.redirect_stdout(verl_log), contextlib.redirect_stderr(verl_log):
        worker = make_worker(init_dir, cfg, math.gcd(cfg.sft_batch, cfg.papo_prompts * cfg.papo_group))
    log(f"verl ActorRolloutRefWorker (fsdp2, cpu platform, attention npr) ready in {time.perf_counter() - start:.1f}s")
    sft_log = []
    t_sft = time.perf_counter()
    for step in range(1, cfg.sft_steps + 1):
        golds = [gold_sample(templates, tokenizer, p) for p in train_problems(rng, cfg, held_out, cfg.sft_batch)]
        data = make_data_proto(golds, tokenizer.pad_token_id)
        mask = data.batch["response_mask"].float()
        m = update(worker, data, mask.clone(), torch.zeros_like(mask), step)
        if step % 25 == 0 or step in (1, cfg.sft_steps):
            nll = float(-(actor_log_probs(worker, data) * mask).sum() / mask.sum())
            sft_log.append({"step": step, "nll": nll, "grad_norm": m.get("grad_norm"), "lr": m.get("lr"),
                            "s": round(time.perf_counter() - t_sft, 1)})
            if step % 50 == 0 or step in (1, cfg.sft_steps):
                log(f"  SFT step {step}/{cfg.sft_steps}: token-mean NLL of the batch just trained on {nll:.3f} "
                    f"({time.perf_counter() - t_sft:.0f}s)")
    sft_dir = os.path.join(cfg.output_dir, "model-sft")
    tokenizer.save_pretrained(sft_dir)
    load_weights(engine, actor_state(worker), hf, sft_dir)
    phase(f"Stage 2: {cfg.sft_steps} verl actor updates of {cfg.sft_batch} gold trajectories", start)

    def evaluate_trained(name: str, folder: str, model_dir: str) -> None:
        """Both modes on the held-out split, plus the fork-join speed-up on its first problems."""
        start = time.perf_counter()
        rows.append(metrics_row(name, evaluate(cfg, engine, model_dir, test_file, folder, ("parallel", "sequential"),
                                               max_new)))
        latency = rows[-1]["latency"] = measure_speedup(hf, tokenizer, test[:cfg.speed_problems], max_new)
        log(f"eval {name}: accuracy {rows[-1]['accuracy']:.0%}, trigger rate {rows[-1]['trigger_rate']:.0%}; "
            + (f"fork-join vs a sequential replay of the same tokens {latency['speedup']:.2f}x (ideal "
               f"{latency['ideal']:.2f}x) on {latency['problems']} problems" if latency["problems"]
               else "no trajectory stopped by itself, so no speed-up was measured"))
        phase(f"eval {name}", start)

    evaluate_trained("after SFT", "after_sft", sft_dir)

    # 4. Stage 3: PAPO on fork-join rollouts
    start = time.perf_counter()
    papo_dir = os.path.join(cfg.output_dir, "model-papo")
    tokenizer.save_pretrained(papo_dir)
    papo_log = []
    for it in range(cfg.papo_steps):
        problems = train_problems(rng, cfg, held_out, cfg.papo_prompts)
        record = papo_iteration(worker, engine, tokenizer, templates, problems, cfg, max_new,
                                seed=cfg.seed * 1000 + it, step=cfg.sft_steps + 1 + it)
        load_weights(engine, actor_state(worker), hf, papo_dir)
        papo_log.append({"iteration": it + 1, **record})
        log(f"  PAPO {it + 1}/{cfg.papo_steps}: {record['rollouts']} rollouts, correct {record['correct']:.0%}, "
            f"valid {record['valid']}, engine vs actor max |dlogp| {record['logprob_gap']:.1e}")
    if not cfg.papo_steps:
        load_weights(engine, actor_state(worker), hf, papo_dir)
    phase(f"Stage 3: {cfg.papo_steps} PAPO updates", start)

    evaluate_trained("after PAPO", "after_papo", papo_dir)
    gaps = [r["logprob_gap"] for r in papo_log]
    return {"config": asdict(cfg), "rows": rows, "sft": {"steps": cfg.sft_steps, "log": sft_log}, "papo": papo_log,
            "max_logprob_gap": max(gaps) if gaps else None,
            "after_sft_widths": _widths(os.path.join(cfg.output_dir, "eval", "after_sft"))}


def _widths(folder: str) -> list[list[int]]:
    from npr.eval.runner import read_samples

    return [r["widths"] for r in read_samples(os.path.join(folder, "samples.jsonl")) if r["mode"] == "parallel"]


def _any_correct(samples: str) -> bool:
    from npr.eval.runner import read_samples

    return any(r["mode"] == "parallel" and r["correct"] for r in read_samples(samples))


def format_table(rows: list[dict]) -> str:
    fmt = lambda v, pct=True: "-" if v is None else (f"{v:.0%}" if pct else f"{v:.1f}")  # noqa: E731
    lines = ["| phase | accuracy (parallel) | accuracy (sequential) | trigger rate | mean width | tokens | "
             "critical path | fork-join speed-up (same tokens) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        sp, ideal = (r.get("latency") or {}).get("speedup"), (r.get("latency") or {}).get("ideal")
        lines.append(f"| {r['phase']} | {fmt(r['accuracy'])} | {fmt(r.get('sequential_accuracy'))} | "
                     f"{fmt(r['trigger_rate'])} | {fmt(r['mean_width'], False)} | {fmt(r['tokens'], False)} | "
                     f"{fmt(r['critical_path'], False)} | {'-' if sp is None else f'{sp:.2f}x (ideal {ideal:.2f}x)'} |")
    return "\n".join(lines)


def write_outputs(cfg: DemoConfig, report: dict, log: Callable[[str], None]) -> None:
    from npr.eval.view import load_record, render_html, render_terminal

    out = cfg.output_dir
    samples = os.path.join(out, "eval", "after_papo", "samples.jsonl")
    # the first held-out problem solved in parallel mode (the first one at all when none is)
    record = load_record(samples, 0, {"mode": "parallel", "correct": "True"}) if _any_correct(samples) else \
        load_record(samples, 0, {"mode": "parallel"})
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
    if report["max_logprob_gap"] is not None:
        log(f"engine vs verl actor log-probs on the PAPO rollouts: max |diff| {report['max_logprob_gap']:.1e}")
    log(f"total {report['total_s']:.0f}s: " + ", ".join(f"{k} {v:.0f}s" for k, v in report["timings_s"].items()))
    log(f"outputs in {out}/ (summary.md, report.json, plots/, trajectory.html, eval/*/report.md)")


def make_plots(report: dict, out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(os.path.join(out, "plots"), exist_ok=True)
    rows = report["rows"]
    names = [r["phase"] for r in rows]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    axes[0].bar(names, [100 * (r["accuracy"] or 0) for r in rows], color="tab:blue")
    axes[0].set_title("held-out accuracy, parallel (%)")
    axes[1].bar(names, [100 * (r["trigger_rate"] or 0) for r in rows], color="tab:green")
    axes[1].set_title("parallel trigger rate (%)")
    for ax in axes[:2]:
        ax.set_ylim(0, 100)
    x = range(len(rows))
    axes[2].bar([i - 0.2 for i in x], [r["tokens"] or 0 for r in rows], 0.4, label="total tokens")
    axes[2].bar([i + 0.2 for i in x], [r["critical_path"] or 0 for r in rows], 0.4, label="critical path")
    axes[2].set_xticks(list(x), names)
    axes[2].legend()
    axes[2].set_title("tokens per response")
    sft = report["sft"]["log"]
    axes[3].plot([e["step"] for e in sft], [e["nll"] for e in sft], marker="o")
    axes[3].set_yscale("log")
    axes[3].set_xlabel("verl actor update")
    axes[3].set_title("Stage 2: NLL of the batch")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "plots", "demo.png"), dpi=100)
    plt.close(fig)
