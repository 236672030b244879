"""The demo's synthetic task, with a genuine parallel decomposition: "Sum: a7 b1 c5 d9 ...", one `<plan>`
per chunk of keyed digits, one `<step>` per chunk adding its digits (each blind to its siblings), a
`<takeaway>` adding the partial sums, then `\\boxed{}` — built with `Templates`. The keys (a, b, c, ...)
make every copy an exact lookup, so a tiny model can learn it in minutes. A held-out split comes from its
own seed stream and is never trained on."""

from __future__ import annotations

import random
from typing import Any

from verl_npr.demo.config import KEYS, DemoConfig

QUESTION_PREFIX = "Sum: "
BENCHMARK = "demo_sum"


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
    from npr.loading import encode_prompt

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

