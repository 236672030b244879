"""The demo's outputs: summary table (summary.md), report.json, plots/demo.png, and one held-out trajectory
after PAPO as a tree and as trajectory.html."""

from __future__ import annotations

import json
import os
from typing import Callable

from verl_npr.demo.config import DemoConfig


def _any_correct(samples: str) -> bool:
    from npr.eval.runner import read_samples

    return any(r["mode"] == "parallel" and r["correct"] for r in read_samples(samples))


def format_table(rows: list[dict]) -> str:
    fmt = lambda v, pct=True: "-" if v is None else (f"{v:.0%}" if pct else f"{v:.1f}")  # noqa: E731
    lines = ["| phase | accuracy (parallel) | accuracy (sequential) | sampled accuracy (avg@n, T=1) | trigger rate "
             "(greedy / sampled) | mean width | tokens | critical path | fork-join speed-up (same tokens) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        sp, ideal = (r.get("latency") or {}).get("speedup"), (r.get("latency") or {}).get("ideal")
        lines.append(f"| {r['phase']} | {fmt(r['accuracy'])} | {fmt(r.get('sequential_accuracy'))} | "
                     f"{fmt(r.get('sampled_accuracy'))} | {fmt(r['trigger_rate'])} / {fmt(r.get('sampled_trigger_rate'))} | "
                     f"{fmt(r['mean_width'], False)} | {fmt(r['tokens'], False)} | "
                     f"{fmt(r['critical_path'], False)} | {'-' if sp is None else f'{sp:.2f}x (ideal {ideal:.2f}x)'} |")
    return "\n".join(lines)


def write_outputs(cfg: DemoConfig, report: dict, log: Callable[[str], None]) -> None:
    from npr.view import load_record, render_html, render_terminal

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
        log(f"engine vs verl actor log-probs on every Stage-1 and PAPO rollout: max |diff| "
            f"{report['max_logprob_gap']:.1e}")
    log(f"total {report['total_s']:.0f}s: " + ", ".join(f"{k} {v:.0f}s" for k, v in report["timings_s"].items()))
    log(f"outputs in {out}/ (summary.md, report.json, plots/, trajectory.html, eval/*/report.md)")


def make_plots(report: dict, out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(os.path.join(out, "plots"), exist_ok=True)
    rows = report["rows"]
    names = [r["phase"].replace("after ", "") for r in rows]
    x = list(range(len(rows)))
    fig, axes = plt.subplots(1, 4, figsize=(18, 3.8))
    for ax, (key, sampled_key, title) in zip(axes[:2], (
            ("accuracy", "sampled_accuracy", "held-out accuracy (%)"),
            ("trigger_rate", "sampled_trigger_rate", "parallel trigger rate (%)"))):
        ax.bar([i - 0.2 for i in x], [100 * (r[key] or 0) for r in rows], 0.4, label="greedy")
        ax.bar([i + 0.2 for i in x], [100 * (r.get(sampled_key) or 0) for r in rows], 0.4, label="sampled, T=1")
        ax.set_xticks(x, names, fontsize=8)
        ax.set_ylim(0, 100)
        ax.set_title(title)
        ax.legend(fontsize=8)
    axes[2].bar([i - 0.2 for i in x], [r["tokens"] or 0 for r in rows], 0.4, label="total tokens")
    axes[2].bar([i + 0.2 for i in x], [r["critical_path"] or 0 for r in rows], 0.4, label="critical path")
    axes[2].set_xticks(x, names, fontsize=8)
    axes[2].legend(fontsize=8)
    axes[2].set_title("tokens per response (greedy)")
    offset = 0
    for name, log in (("Stage 1", report["stage1"]["log"]), ("PAPO", report["papo"])):
        axes[3].plot([offset + e["iteration"] for e in log], [100 * e["correct"] for e in log], marker="o",
                     label=f"{name}: correct")
        axes[3].plot([offset + e["iteration"] for e in log], [100 * e["trigger_rate"] for e in log], marker="x",
                     linestyle="--", label=f"{name}: parallel format")
        offset += len(log)
    axes[3].set_ylim(0, 100)
    axes[3].set_xlabel("RL update")
    axes[3].set_title("rollouts (%)")
    axes[3].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "plots", "demo.png"), dpi=100)
    plt.close(fig)
