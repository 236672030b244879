"""Reward throughput on realistic ~8k-token parallel trajectories, single process (responses per second).

Cases (one setup function each, shared by all providers): `mixed` (many answer kinds, each correct
answer in a different form, so math-verify always runs) and `integer` (AIME-style integer answers).
Providers:
  npr            reward.compute_score (Stage 1): format score + extraction + time-bounded math-verify
  npr_format     reward.format_score alone
  mathverify     baseline: math_verify.parse on the whole response + verify, in this process (signal timeout)
Every repeat uses fresh trajectories and answers (seed = repeat index) and the verdict cache is
cleared, so no answer is verified twice.
Rows go to benchmarks/results/reward.csv with device, versions, git sha, date, median/p20/p80.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import append_rows, cpu_device, dist_version, git_sha, quantiles  # noqa: E402

CHARS_PER_TOKEN = 4  # rough for English + LaTeX with a Qwen-style tokenizer


def _answer_triple(rng: random.Random, kind: int) -> tuple[str, str, str]:
    """(reference, an equivalent answer in another form, a wrong answer), fresh numbers every call so
    that no parse cache helps."""
    a, b, k = rng.randint(2, 400), rng.randint(401, 997), rng.randint(2, 9)
    kinds = [
        lambda: (f"\\frac{{{a}}}{{{b}}}", f"\\frac{{{k * a}}}{{{k * b}}}", f"\\frac{{{a + 1}}}{{{b}}}"),
        lambda: (f"{a}.5", f"\\frac{{{2 * a + 1}}}{{2}}", f"{a}.25"),
        lambda: (f"{k}\\sqrt{{{b}}}", f"\\sqrt{{{k * k * b}}}", f"{k + 1}\\sqrt{{{b}}}"),
        lambda: (f"[{a},{b})", f"[{a}, {b})", f"({a},{b}]"),
        lambda: (f"\\{{{a},{b},{k}\\}}", f"\\{{{k},{b},{a}\\}}", f"\\{{{a},{b}\\}}"),
        lambda: (f"x={a}", f"{a}", f"x={a + 1}"),
        lambda: (f"{a % 100}\\%", f"{(a % 100) / 100}", f"{a % 100 + 1}\\%"),
        lambda: (f"(x+{a})^2", f"x^2+{2 * a}x+{a * a}", f"x^2+{a * a}"),
        lambda: (f"-\\frac{{{a}}}{{{2 * b}}}", f"\\frac{{-{a}}}{{{2 * b}}}", f"\\frac{{{a}}}{{{2 * b}}}"),
        lambda: (f"{a}\\pi", f"\\pi \\cdot {a}", f"{a + 1}\\pi"),
    ]
    return kinds[kind % len(kinds)]()


SENTENCES = [
    "We substitute $x = {a}$ into the equation and simplify both sides carefully.",
    "Then $\\frac{{{a}}}{{{b}}} + \\frac{{{b}}}{{{a}}} = \\frac{{{a}^2 + {b}^2}}{{{a}{b}}}$, which we keep for later.",
    "By the AM-GM inequality, $a + b \\ge 2\\sqrt{{ab}}$ with equality when $a = b = {a}$.",
    "Let us double-check the case $n = {a}$: the sum is ${a}({a}+1)/2 = {c}$.",
    "Consider the interval $[{a}, {b}]$; the function is increasing there since $f'(x) > 0$.",
    "Expanding $(x + {a})^2 = x^2 + {d}x + {e}$ gives the quadratic we need.",
    "Hence the remainder modulo ${b}$ is ${a}$, consistent with the earlier computation.",
]


def _paragraph(rng: random.Random, num_chars: int) -> str:
    out, size = [], 0
    while size < num_chars:
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        s = rng.choice(SENTENCES).format(a=a, b=b, c=a * (a + 1) // 2, d=2 * a, e=a * a)
        out.append(s)
        size += len(s) + 1
    return " ".join(out)


def make_trajectory(rng: random.Random, num_tokens: int, answer: str) -> str:
    """A well-formed parallel trajectory of about `num_tokens` tokens ending in \\boxed{answer}."""
    num_blocks = rng.randint(2, 4)
    widths = [rng.randint(2, 4) for _ in range(num_blocks)]
    budget = int(num_tokens * CHARS_PER_TOKEN * 0.96)  # paragraphs overshoot by about one sentence
    step_chars = budget // (sum(widths) + num_blocks)  # steps plus one takeaway per block
    parts = []
    for width in widths:
        plans = "".join(f"<plan>{i}: {_paragraph(rng, 80)}</plan>\n" for i in range(1, width + 1))
        steps = "".join(f"<step>\n{i}: {_paragraph(rng, step_chars)}\n</step>\n" for i in range(1, width + 1))
        parts.append(f"<guideline>\n{plans}</guideline>\n{steps}<takeaway>\n{_paragraph(rng, step_chars)}\n</takeaway>\n")
    return "".join(parts) + f"Therefore the final answer is $\\boxed{{{answer}}}$."


def setup_mixed(num_responses: int, num_tokens: int, seed: int = 0) -> list[tuple[str, str]]:
    """(response, reference) pairs over many answer kinds: half answered in an equivalent but different
    form, half wrong, so every answer needs math-verify (the slow path)."""
    rng = random.Random(seed)
    cases = []
    for i in range(num_responses):
        reference, equivalent, wrong = _answer_triple(rng, i)
        cases.append((make_trajectory(rng, num_tokens, equivalent if i % 2 == 0 else wrong), reference))
    return cases


def setup_integer(num_responses: int, num_tokens: int, seed: int = 0) -> list[tuple[str, str]]:
    """AIME/GSM8K style: integer references, half answered exactly, half wrong."""
    rng = random.Random(seed)
    cases = []
    for i in range(num_responses):
        reference = rng.randint(0, 999)
        answer = reference if i % 2 == 0 else reference + rng.randint(1, 9)
        cases.append((make_trajectory(rng, num_tokens, str(answer)), str(reference)))
    return cases


CASES = {"mixed": setup_mixed, "integer": setup_integer}


def run_npr(cases):
    from reward import compute_score

    return [compute_score("bench", text, ref, stage="zero")["score"] for text, ref in cases]


def run_npr_format(cases):
    from reward import format_score

    return [format_score(text)[0] for text, _ in cases]


def run_mathverify(cases):
    from math_verify import parse, verify

    return [float(verify(parse("$" + ref + "$"), parse(text))) for text, ref in cases]


PROVIDERS = {"npr": run_npr, "npr_format": run_npr_format, "mathverify": run_mathverify}


def _measure(case: str, name: str, repeats: list[list[tuple[str, str]]], args: argparse.Namespace) -> dict:
    from reward.verify import clear_cache

    fn = PROVIDERS[name]
    fn(CASES[case](2, 256, seed=-1))  # warm up: worker start, imports
    rates = []
    for cases in repeats:
        clear_cache()
        start = time.perf_counter()
        fn(cases)
        rates.append(len(cases) / (time.perf_counter() - start))
    row = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "git_sha": git_sha(),
        "device": cpu_device(), "python": platform.python_version(), "math_verify": dist_version("math-verify"),
        "sympy": dist_version("sympy"), "torch": dist_version("torch"), "verl": dist_version("verl"),
        "case": f"parallel_{args.num_tokens // 1024}k_{case}", "provider": name, "num_responses": len(repeats[0]),
        "repeats": len(repeats), "median_resp_per_s": round(statistics.median(rates), 2),
        "p20_resp_per_s": round(quantiles(rates)[1], 2), "p80_resp_per_s": round(quantiles(rates)[2], 2),
    }
    print(f"  {name:12s} median {row['median_resp_per_s']:8.2f} resp/s  "
          f"(p20 {row['p20_resp_per_s']}, p80 {row['p80_resp_per_s']})  on {row['device']}")
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-responses", type=int, default=48)
    parser.add_argument("--num-tokens", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--providers", default="npr,npr_format,mathverify")
    parser.add_argument("--cases", default="mixed,integer")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "reward.csv"))
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    rows = []
    for case in args.cases.split(","):
        repeats = [CASES[case](args.num_responses, args.num_tokens, seed=r) for r in range(args.repeats)]
        mean_chars = statistics.mean(len(t) for t, _ in repeats[0])
        print(f"case {case}: {args.num_responses} responses x {args.repeats} repeats, "
              f"~{mean_chars / CHARS_PER_TOKEN:.0f} tokens ({mean_chars:.0f} chars) each")
        rows += [_measure(case, name, repeats, args) for name in args.providers.split(",")]
    if not args.no_write:
        append_rows(args.out, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
