"""Evaluation harness (`npr eval`, `npr inspect`): benchmarks, engines, metrics, runs, reports, views."""

from npr.eval.benchmarks import BENCHMARKS, Benchmark, BenchmarkError, Problem, get_benchmark, grade_sample, load_benchmark
from npr.eval.config import BenchmarkSpec, ConfigError, EvalConfig, load_config
from npr.eval.engines import EngineError, ReferenceEngine, Request, Sampling, engine_class, make_engine
from npr.eval.metrics import (Structure, avg_at_k, pass_at_k, replay_summary, speedup, structure_from_spans, structure_of,
                              summarize_samples)
from npr.eval.runner import read_samples, run_eval
from npr.view import load_record, render_html, render_terminal

__all__ = [
    "BENCHMARKS", "Benchmark", "BenchmarkError", "BenchmarkSpec", "ConfigError", "EngineError", "EvalConfig",
    "HttpEngine", "Problem", "ReferenceEngine", "Request", "SGLangEngine", "Sampling", "Structure", "avg_at_k", "get_benchmark",
    "engine_class", "grade_sample", "load_benchmark", "load_config", "load_record", "make_engine", "pass_at_k", "read_samples",
    "render_html", "render_terminal", "replay_summary", "run_eval", "speedup", "structure_from_spans", "structure_of",
    "summarize_samples",
]


def __getattr__(name: str):
    """SGLangEngine, HttpEngine: the classes sglang_npr registers in `npr.engines` (loaded on first use)."""
    if name in ("SGLangEngine", "HttpEngine"):
        return engine_class({"SGLangEngine": "sglang", "HttpEngine": "http"}[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
