"""Evaluation harness (`npr eval`, `npr inspect`): benchmarks, engines, metrics, runs, reports, views."""

from npr.eval.benchmarks import BENCHMARKS, Benchmark, BenchmarkError, Problem, get_benchmark, grade_sample, load_benchmark
from npr.eval.config import BenchmarkSpec, ConfigError, EvalConfig, load_config
from npr.eval.engines import EngineError, HttpEngine, ReferenceEngine, Sampling, SGLangEngine, make_engine
from npr.eval.metrics import Structure, avg_at_k, pass_at_k, speedup, structure_from_spans, structure_of, summarize_samples
from npr.eval.runner import read_samples, run_eval
from npr.view import load_record, render_html, render_terminal

__all__ = [
    "BENCHMARKS", "Benchmark", "BenchmarkError", "BenchmarkSpec", "ConfigError", "EngineError", "EvalConfig",
    "HttpEngine", "Problem", "ReferenceEngine", "SGLangEngine", "Sampling", "Structure", "avg_at_k", "get_benchmark",
    "grade_sample", "load_benchmark", "load_config", "load_record", "make_engine", "pass_at_k", "read_samples",
    "render_html", "render_terminal", "run_eval", "speedup", "structure_from_spans", "structure_of",
    "summarize_samples",
]
