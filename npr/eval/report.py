"""The Markdown report of a run, with PNG plots (matplotlib, headless): accuracy per benchmark next to
the original NPR's numbers, the histogram of block widths, and the speed-up per benchmark."""

from __future__ import annotations

import os
from typing import Any

PLOTS = ("accuracy.png", "widths.png", "speedup.png")


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _num(x: float | None, fmt: str = "{:.1f}") -> str:
    return "–" if x is None else fmt.format(x)


def make_plots(summary: dict[str, Any], folder: str) -> list[str]:
    """Write the three PNGs into `folder`; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(folder, exist_ok=True)
    results = summary["results"]
    names = list(results)
    modes = [m for m in ("parallel", "sequential") if any(m in results[b] for b in names)]
    paths = []

    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(names)), 3.6))
    width = 0.8 / (len(modes) + 1)
    for i, mode in enumerate(modes):
        values = [100 * (results[b].get(mode, {}).get("avg_at_k") or 0) for b in names]
        ax.bar([x + i * width for x in range(len(names))], values, width, label=f"this run, {mode}")
    refs = [results[b]["info"]["reference_avg_at_8"] or 0 for b in names]
    ax.bar([x + len(modes) * width for x in range(len(names))], refs, width, label="original NPR (avg@8)",
           color="lightgray", edgecolor="gray")
    ax.set_xticks([x + width * len(modes) / 2 for x in range(len(names))], [results[b]["info"]["title"] for b in names])
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7)
    ax.set_title("Accuracy per benchmark")
    fig.tight_layout()
    paths.append(os.path.join(folder, PLOTS[0]))
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.4))
    histogram: dict[int, int] = {}
    for b in names:
        for w, count in (results[b].get("parallel", {}).get("width_histogram") or {}).items():
            histogram[int(w)] = histogram.get(int(w), 0) + count
    xs = sorted(histogram) or [2]
    ax.bar(xs, [histogram.get(x, 0) for x in xs])
    ax.set_xlabel("block width (parallel steps)")
    ax.set_ylabel("blocks")
    ax.set_title("Width of forked blocks (parallel mode)")
    ax.set_xticks(xs)
    fig.tight_layout()
    paths.append(os.path.join(folder, PLOTS[1]))
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(names)), 3.4))
    speed = summary.get("speedup") or {}
    values = [((speed.get(b) or {}).get("wall_speedup") or 0) for b in names]
    ax.bar(range(len(names)), values)
    ax.axhline(1.0, color="gray", linestyle="--", linewidth=1)
    ax.set_xticks(range(len(names)), [results[b]["info"]["title"] for b in names])
    ax.set_ylabel("sequential / parallel wall time")
    ax.set_title("Wall ratio of the two runs (different outputs)")
    fig.tight_layout()
    paths.append(os.path.join(folder, PLOTS[2]))
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths


def render_markdown(summary: dict[str, Any]) -> str:
    s, results = summary["sampling"], summary["results"]
    lines = [
        "# NPR evaluation report", "",
        f"Engine **{summary['engine']}**, model `{summary['model']}`, device: {summary['device']}.",
        f"Sampling: n={s['n']}, temperature {s['temperature']}, top-p {s['top_p']}, top-k {s['top_k']}, "
        f"max new tokens {s['max_new_tokens']}, max branches {s['max_branches']}, seed {s['seed']} ({s['seeding']}).",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in summary["versions"].items()) + ".", "",
        "## Accuracy and structure", "",
        "| benchmark | mode | problems | avg@n (%) | pass@k (%) | original avg@8 | format perfect (%) | trigger rate (%) "
        "| mean / max width | blocks / resp. | tokens / resp. | critical path / resp. | tokens/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, by_mode in results.items():
        info = by_mode["info"]
        for mode, m in by_mode.items():
            if mode == "info" or not m.get("num_samples"):
                continue
            passk = ", ".join(f"@{k} {_pct(v)}" for k, v in m["pass_at_k"].items())
            lines.append(
                f"| {info['title']} | {mode} | {m['num_problems']} | {_pct(m['avg_at_k'])} | {passk} | "
                f"{_num(info['reference_avg_at_8'])} | {_pct(m['format_perfect_rate'])} | {_pct(m['trigger_rate'])} | "
                f"{_num(m['mean_width'], '{:.2f}')} / {m['max_width']} | {_num(m['blocks_per_response'], '{:.2f}')} | "
                f"{_num(m['tokens_per_response'])} | {_num(m['critical_path_per_response'])} | {_num(m['tokens_per_s'])} |")
    d = summary["definitions"]
    lines += ["", "![accuracy](plots/accuracy.png)", "", "## Parallelism", "",
              "Trigger rate: " + d["trigger_rate"] + ". Width: " + d["width"] + ". Critical path: "
              + d["critical_path_tokens"] + ".", "", "![widths](plots/widths.png)", "",
              f"## Speed (concurrency {summary.get('concurrency', '–')})", "",
              "| benchmark | mode | time to answer median / p90 (s) | generated tokens/s | samples/s "
              "| critical path / resp. | tokens / resp. |", "|---|---|---|---|---|---|---|"]
    for name, by_mode in results.items():
        for mode, m in by_mode.items():
            if mode == "info" or not m.get("num_samples"):
                continue
            tta = m.get("time_to_answer_s") or {}
            lines.append(f"| {by_mode['info']['title']} | {mode} | {_num(tta.get('median'), '{:.3f}')} / "
                         f"{_num(tta.get('p90'), '{:.3f}')} | {_num(m['tokens_per_s'])} | "
                         f"{_num(m.get('samples_per_s'), '{:.2f}')} | {_num(m['critical_path_per_response'])} | "
                         f"{_num(m['tokens_per_response'])} |")
    lines += ["", "* Time to answer: " + d["time_to_answer_s"] + ".", "* Generated tokens/s: " + d["tokens_per_s"] + ".",
              "* Samples/s: " + d["samples_per_s"] + ".", "* Critical path: " + d["critical_path_tokens"] + ".", "",
              "### Fork-join speed-up on the same outputs (replay)", ""]
    replay = {k: v for k, v in (summary.get("replay") or {}).items() if v}
    if replay:
        lines += ["| benchmark | samples | fork-join (s) | sequential replay (s) | replay speed-up | token ratio |",
                  "|---|---|---|---|---|---|"]
        for name, rp in replay.items():
            lines.append(f"| {results[name]['info']['title']} | {rp['num_samples']} | {rp['fork_join_s']:.3f} | "
                         f"{rp['sequential_s']:.3f} | {_num(rp['replay_speedup'], '{:.2f}')}× | "
                         f"{_num(rp['token_ratio'], '{:.2f}')}× |")
    else:
        lines.append("Not measured in this run (set `replay: N` to time N parallel samples per benchmark).")
    lines += ["", "* Replay speed-up: " + d["replay_speedup"] + ".", "* Token ratio: " + d["token_ratio"] + ".", "",
              "### Parallel vs sequential runs (different outputs)", "",
              "| benchmark | problems | parallel wall (s) | sequential wall (s) | wall ratio | parallel tokens/resp. | "
              "sequential tokens/resp. | parallel tokens/s | sequential tokens/s |", "|---|---|---|---|---|---|---|---|---|"]
    for name, sp in (summary.get("speedup") or {}).items():
        if sp:
            lines.append(f"| {results[name]['info']['title']} | {sp['num_problems']} | {sp['parallel_wall_s']:.2f} | "
                         f"{sp['sequential_wall_s']:.2f} | {_num(sp['wall_speedup'], '{:.2f}')}× | "
                         f"{_num(sp.get('parallel_tokens_per_response'))} | {_num(sp.get('sequential_tokens_per_response'))} | "
                         f"{_num(sp['parallel_tokens_per_s'])} | {_num(sp['sequential_tokens_per_s'])} |")
    lines += ["", "* Wall ratio: " + d["wall_speedup"] + "; it is not a speed-up of one output. The original "
              "reports 2.9–4.6× tokens/s over sequential reasoning (its own GPUs).", "",
              "![speed-up](plots/speedup.png)", ""]
    for note in summary.get("notes") or []:
        lines.append(f"Note: {note}")
    return "\n".join(lines)


def write_report(summary: dict[str, Any], output_dir: str) -> str:
    """report.md and plots/*.png in output_dir; returns the report's path."""
    make_plots(summary, os.path.join(output_dir, "plots"))
    path = os.path.join(output_dir, "report.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write(render_markdown(summary))
    return path
