"""How the reward's caller-side work grows with degenerate rollouts (issue #13): seconds per
`compute_score` call at two text sizes (default 10k and 100k characters); linear code takes about 10x
longer for 10x the text, quadratic code about 100x. Plus the longest call when many threads grade at once
with a few pathological answers among them (the verification timeout promise under concurrency).

Cases (one setup function each, shared by every provider):
  boxed_open        "\\boxed{" repeated (no box ever closes)
  unclosed_rollout  a valid parallel trajectory, then "So \\boxed{" repeated
  stray_plan        a guideline holding one plan and a run of stray </plan>
  tags_in_plan      a plan never closed, holding a run of "<step>x" (content collected by npr.schema)
  blank_answer      "Answer:" then a run of newlines (the answer-phrase regex)
  nested_text       \\boxed{\\text{\\text{...B...}}} against a multiple-choice reference
  concurrent        16 threads x 4 answers each, 4 of the 64 pathological for math-verify (--timeout-s)
Providers, each in its own process:
  npr        the reward package of this checkout
  baseline   the reward package at --baseline-rev (default: the commit before issue #13's fixes)
Rows go to benchmarks/results/reward_scaling.csv with device, versions, git sha, date, median/p20/p80.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from io import BytesIO
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import append_rows, cpu_device, dist_version, git_sha, quantiles  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BASELINE_REV = "1e2d487"  # the last commit before the fixes of issue #13
TRAJECTORY = ("<guideline>\n<plan>1: a</plan>\n<plan>2: b</plan>\n</guideline>\n<step>\n1: x\n</step>\n"
              "<step>\n2: y\n</step>\n<takeaway>\nt\n</takeaway>\n")
PATHOLOGICAL = "9^{9^{9^{9}}}"  # sympy evaluates the tower: only the hard deadline ends it


def _repeat(unit: str, num_chars: int, prefix: str = "", suffix: str = "") -> str:
    return prefix + unit * max(1, (num_chars - len(prefix) - len(suffix)) // len(unit)) + suffix


def setup_boxed_open(num_chars: int) -> tuple[str, str]:
    return _repeat("\\boxed{", num_chars), "42"


def setup_unclosed_rollout(num_chars: int) -> tuple[str, str]:
    return _repeat("So \\boxed{", num_chars, prefix=TRAJECTORY), "42"


def setup_stray_plan(num_chars: int) -> tuple[str, str]:
    return _repeat("</plan>", num_chars, prefix="<guideline><plan>1: a", suffix="</guideline>"), "42"


def setup_tags_in_plan(num_chars: int) -> tuple[str, str]:
    return _repeat("<step>x", num_chars, prefix="<guideline><plan>1: "), "42"


def setup_blank_answer(num_chars: int) -> tuple[str, str]:
    return _repeat("\n", num_chars, prefix="Answer:"), "42"


def setup_nested_text(num_chars: int) -> tuple[str, str]:
    depth = max(1, (num_chars - 10) // 7)
    return "\\boxed{" + "\\text{" * depth + "B" + "}" * depth + "}", "B"


CASES = {name[len("setup_"):]: fn for name, fn in dict(globals()).items() if name.startswith("setup_")}


def time_case(case: str, num_chars: int, repeats: int) -> list[float]:
    """Seconds per compute_score call on the case's text (run in the provider's process)."""
    from reward import compute_score

    text, reference = CASES[case](num_chars)
    compute_score("bench", "\\boxed{1}", "1")  # warm up: imports, a verify worker
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        compute_score("bench", text, reference, stage="zero")
        times.append(time.perf_counter() - start)
    return times


def time_concurrent(timeout_s: float, num_threads: int = 16, per_thread: int = 4) -> list[float]:
    """Seconds per grade() call when `num_threads` threads grade at once and 4 answers are pathological."""
    from reward import grade

    grade("\\boxed{1}", "1")
    times: list[float] = []
    lock = threading.Lock()

    def work(thread: int) -> None:
        for i in range(per_thread):
            answer = PATHOLOGICAL if thread < 4 and i == 0 else f"\\frac{{{2 * (thread * 10 + i)}}}{{2}}"
            start = time.perf_counter()
            grade("\\boxed{" + answer + "}", str(thread * 10 + i), timeout_s=timeout_s)
            with lock:
                times.append(time.perf_counter() - start)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(num_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return times


def _child(argv: list[str]) -> int:
    """Entry point of a provider process: prints the measured seconds as JSON."""
    spec = json.loads(argv[0])
    if spec["case"] == "concurrent":
        times = time_concurrent(spec["timeout_s"])
    else:
        times = time_case(spec["case"], spec["num_chars"], spec["repeats"])
    print(json.dumps(times))
    return 0


def _provider_path(provider: str, rev: str, tmp: str) -> str:
    """PYTHONPATH that makes `import reward` load the provider's reward package (npr from this checkout)."""
    if provider == "npr":
        return str(ROOT)
    archive = subprocess.run(["git", "archive", rev, "reward"], cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(tmp, filter="data")
    return os.pathsep.join([tmp, str(ROOT)])


def _measure(provider: str, path: str, spec: dict, limit_s: float) -> list[float] | None:
    env = dict(os.environ, PYTHONPATH=path, NPR_REWARD_WORKERS=os.environ.get("NPR_REWARD_WORKERS", ""))
    try:
        proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True,
                              text=True, env=env, timeout=limit_s, cwd=tempfile.gettempdir())
    except subprocess.TimeoutExpired:
        return None
    if proc.returncode != 0:
        raise RuntimeError(f"{provider} {spec}: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return _child(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000", help="text sizes in characters")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cases", default=",".join(list(CASES) + ["concurrent"]))
    parser.add_argument("--providers", default="npr,baseline")
    parser.add_argument("--baseline-rev", default=BASELINE_REV)
    parser.add_argument("--timeout-s", type=float, default=5.0, help="verification timeout of the concurrent case")
    parser.add_argument("--limit-s", type=float, default=600, help="a provider run longer than this is reported as >limit")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "reward_scaling.csv"))
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    base = {"git_sha": git_sha(), "device": cpu_device(), "python": platform.python_version(),
            "math_verify": dist_version("math-verify"), "sympy": dist_version("sympy")}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for provider in args.providers.split(","):
            path = _provider_path(provider, args.baseline_rev, tmp)
            label = provider if provider == "npr" else f"baseline@{args.baseline_rev}"
            for case in args.cases.split(","):
                specs = ([{"case": case, "timeout_s": args.timeout_s, "num_chars": 0}] if case == "concurrent" else
                         [{"case": case, "num_chars": n, "repeats": args.repeats} for n in sizes])
                medians = []
                for spec in specs:
                    times = _measure(provider, path, spec, args.limit_s)
                    median, p20, p80 = quantiles(times) if times else (float("nan"),) * 3
                    medians.append(median)
                    rows.append({**base, "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                                 "provider": label, "case": case, "num_chars": spec["num_chars"],
                                 "repeats": len(times or []), "median_s": round(median, 5),
                                 "p20_s": round(p20, 5), "p80_s": round(p80, 5),
                                 "max_s": round(max(times), 5) if times else f">{args.limit_s:g}"})
                    shown = f"{median:9.4f} s" if times else f">{args.limit_s:g} s"
                    extra = f" (max {max(times):.2f} s over {len(times)} calls)" if times and case == "concurrent" else ""
                    print(f"{label:20s} {case:17s} {spec['num_chars']:>7d} chars  median {shown}{extra}", flush=True)
                if len(medians) == 2 and all(m == m for m in medians):
                    print(f"{'':20s} {case:17s} growth x{medians[1] / medians[0]:.1f} for x{sizes[1] / sizes[0]:g} text")
    print(f"on {base['device']}")
    if not args.no_write:
        append_rows(args.out, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
