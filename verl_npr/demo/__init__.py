"""`npr demo`: the NPR pipeline in miniature on a CPU, through the code the GPU recipes run; `npr` finds it
through the `npr.pipelines` entry point. Modules: `config` (DemoConfig, FAST), `task` (the synthetic task),
`actor` (the tiny model, verl's actor), `hosts` (engine, weights, quiet logs), `rl` (a Stage-1 or Stage-3 iteration),
`evaluation`, `report`, `pipeline` (the phases in order)."""

from verl_npr.demo.config import FAST, KEYS, MAX_BRANCHES, DemoConfig
from verl_npr.demo.hosts import quiet_hosts, setup_env
from verl_npr.demo.pipeline import run_demo
from verl_npr.demo.report import format_table
from verl_npr.demo.task import (BENCHMARK, INSTRUCTION, QUESTION_PREFIX, gold_sample, make_problem, make_test_split,
                                sequential_sample, train_problems)

__all__ = ["BENCHMARK", "FAST", "INSTRUCTION", "KEYS", "MAX_BRANCHES", "QUESTION_PREFIX", "DemoConfig", "format_table",
           "gold_sample", "make_problem", "make_test_split", "quiet_hosts", "run_demo", "sequential_sample", "setup_env",
           "train_problems"]
