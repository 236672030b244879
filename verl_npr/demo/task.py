"""The demo's synthetic task, with a genuine parallel decomposition: "Think in parallel. Count odd: a7 b2 c5
d9 ...", how many of the keyed digits are odd. Its parallel solution has one `<plan>` per chunk of digits,
one `<step>` per chunk counting its odd digits (" a7:1 b2:1 c5:2", each blind to its siblings), a
`<takeaway>` adding the chunks' counts, each named by its chunk's last key ("c2+f1=3+i2=5"), then
`\\boxed{}` — built with `Templates`. Its sequential solution is one running count over every digit, no
tags: what the demo's "instruct" model mostly writes. Each written count is the one before it plus 0 or 1,
and the keys (a, b, c, ...) make every copy an exact lookup (the takeaway too: the branches share
positions, so it finds a chunk's count by the key before it), so a tiny model learns it in minutes. A
held-out split comes from its own seed stream and is never trained on."""

from __future__ import annotations

import random
from typing import Any

from verl_npr.demo.config import KEYS, DemoConfig

INSTRUCTION = "Think in parallel. "
QUESTION_PREFIX = "Count odd: "
BENCHMARK = "demo_count"


def running_count(digits: list[int], keys: str) -> tuple[str, int]:
    """' a7:1 b2:1 c5:2': each keyed digit and the count of odd digits so far; the text and the count."""
    count, parts = 0, []
    for key, d in zip(keys, digits):
        count += d % 2
        parts.append(f"{key}{d}:{count}")
    return " " + " ".join(parts), count


def make_problem(rng: random.Random, cfg: DemoConfig) -> dict[str, Any]:
    """One problem, its gold parallel solution (the parts Templates.block_ids takes) and its sequential
    solution text. The question carries the instruction; `plain_question` is the one without it."""
    numbers = [rng.randint(1, 9) for _ in range(rng.randint(cfg.min_numbers, cfg.max_numbers))]
    chunks = [list(range(i, min(i + cfg.chunk_size, len(numbers)))) for i in range(0, len(numbers), cfg.chunk_size)]
    plans, steps, partial = [], [], []
    for k, chunk in enumerate(chunks, 1):
        plans.append(f"{k}: " + ",".join(KEYS[i] for i in chunk))
        text, count = running_count([numbers[i] for i in chunk], "".join(KEYS[i] for i in chunk))
        steps.append(text)
        partial.append((KEYS[chunk[-1]], count))
    # each chunk's count named by the chunk's last key ("c2+f1=3+i2=5"): the count a step ends with follows
    # that key, so the takeaway finds it by content (the branches share positions)
    total = partial[0][1]
    takeaway = f"{partial[0][0]}{total}"
    for key, c in partial[1:]:
        total += c
        takeaway += f"+{key}{c}={total}"
    sequential, count = running_count(numbers, KEYS)
    assert count == total == sum(d % 2 for d in numbers)
    body = " ".join(f"{KEYS[i]}{d}" for i, d in enumerate(numbers))
    return {"question": INSTRUCTION + QUESTION_PREFIX + body, "plain_question": QUESTION_PREFIX + body,
            "answer": str(total), "plans": plans, "steps": steps, "takeaway": takeaway,
            "sequential": sequential, "final": f"\n\\boxed{{{total}}}"}


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
    """The prompt exactly as `npr eval` and `npr sample` build it: the question alone, through the chat template."""
    from npr.loading import encode_prompt

    return list(encode_prompt(tokenizer, question, True))


def _sample(templates, tokenizer, question: str, response: list[int]):
    from npr.layout import build_layout
    from verl_npr.batch import Sample

    prompt = prompt_ids(tokenizer, question)
    layout = build_layout(prompt + response, templates.tags, len(prompt))
    if not layout.is_valid:
        raise RuntimeError(f"the trajectory of {question!r} has an invalid layout ({layout.error}): the task "
                           "builder is broken")
    return Sample(prompt, response, layout, True)


def gold_sample(templates, tokenizer, problem: dict):
    """The canonical ids of the gold parallel trajectory (Templates.block_ids + final answer + eos) as a Sample."""
    response = (templates.block_ids(problem["plans"], problem["steps"], problem["takeaway"])
                + templates.encode(problem["final"]) + [tokenizer.eos_token_id])
    return _sample(templates, tokenizer, problem["question"], response)


def sequential_sample(templates, tokenizer, problem: dict, instructed: bool = True):
    """The sequential solution (no tags) + final answer + eos, under the question with or without the instruction."""
    response = templates.encode(problem["sequential"] + problem["final"]) + [tokenizer.eos_token_id]
    return _sample(templates, tokenizer, problem["question"] if instructed else problem["plain_question"], response)


def instruct_sample(templates, tokenizer, problem: dict, rng: random.Random, cfg: DemoConfig):
    """One training row of the "instruct" prelude: a prompt without the instruction (share instruct_plain)
    gets the sequential solution; one with it gets the parallel solution with probability instruct_parallel,
    else the sequential one."""
    if rng.random() < cfg.instruct_plain:
        return sequential_sample(templates, tokenizer, problem, instructed=False)
    if rng.random() < cfg.instruct_parallel:
        return gold_sample(templates, tokenizer, problem)
    return sequential_sample(templates, tokenizer, problem)
