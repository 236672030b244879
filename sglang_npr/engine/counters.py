"""Scheduler counters of this process (one scheduler per process), read through SGLang's
get_internal_state (`Engine.get_server_info()["internal_states"][i]["npr"]`, HTTP /server_info): how many
forwards each batch ran, how many rows each carried and where the scheduler's time went, for SGLang's
batches and NPR's alike. `benchmarks/bench_sglang_forkjoin.py` reports them; two clock reads per timed
call are all they cost."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass


@dataclass
class Counters:
    batches: int = 0  # Scheduler.run_batch calls that ran a batch
    forwards: int = 0  # TP worker forwards (one per batch is the design)
    decode_forwards: int = 0
    decode_rows: int = 0  # rows of the decode forwards, SGLang's and NPR's
    npr_rows: int = 0  # the NPR rows among them
    npr_forwards: int = 0  # decode forwards that carried NPR rows
    npr_graph_forwards: int = 0  # ... and replayed SGLang's decode CUDA graph (GPU)
    extend_forwards: int = 0
    extend_tokens: int = 0
    decode_forward_s: float = 0.0  # inside the TP worker's forward (model, logits, sampling)
    extend_forward_s: float = 0.0
    decode_busy_s: float = 0.0  # run_batch + process_batch_result of decode batches (forward included)
    extend_busy_s: float = 0.0
    npr_host_s: float = 0.0  # the NPR engine's plan, commit and outputs (inside the busy time)
    # The same times as CPU time of the scheduler process (all its threads): far less sensitive than
    # wall time to other work on the machine.
    decode_forward_cpu_s: float = 0.0
    extend_forward_cpu_s: float = 0.0
    decode_busy_cpu_s: float = 0.0
    extend_busy_cpu_s: float = 0.0
    npr_host_cpu_s: float = 0.0


COUNTERS = Counters()


def snapshot() -> dict:
    return asdict(COUNTERS)


@contextmanager
def timed(field: str):
    """Add the wall time and the process CPU time of the block to `field` and its `_cpu_s` twin."""
    start, cpu = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        cpu_field = field[:-2] + "_cpu_s"
        setattr(COUNTERS, field, getattr(COUNTERS, field) + time.perf_counter() - start)
        setattr(COUNTERS, cpu_field, getattr(COUNTERS, cpu_field) + time.process_time() - cpu)


def busy_field(batch) -> str:
    return "decode_busy_s" if batch.forward_mode.is_decode() else "extend_busy_s"
