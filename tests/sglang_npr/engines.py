"""Helpers (not a test module) for tests that run the real sglang.Engine on CPU: the settings that work
on this machine (docs/cpu.md) and a tiny Qwen3 saved to a directory."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Iterator

# What SGLang needs on a CPU (README.md "Serving with SGLang" shows the same flags; test_readme_serving checks it).
CPU_SETTINGS = dict(device="cpu", disable_cuda_graph=True, dtype="float32", mem_fraction_static=0.3)
CPU_ENGINE_ARGS = dict(**CPU_SETTINGS, max_total_tokens=4096, max_running_requests=16, log_level="error", random_seed=0)


@contextlib.contextmanager
def cpu_engine(model_path: str, attention_backend: str, **overrides) -> Iterator:
    """A real sglang.Engine on CPU (scheduler subprocess, KV pools, radix cache), shut down on exit."""
    import sglang

    engine = sglang.Engine(model_path=model_path, attention_backend=attention_backend,
                           **{**CPU_ENGINE_ARGS, **overrides})
    try:
        yield engine
    finally:
        engine.shutdown()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_flags(settings: dict) -> tuple[str, ...]:
    """launch_server's flags for sglang.Engine keyword arguments (True = a bare flag)."""
    flags: list[str] = []
    for key, value in settings.items():
        flags.append("--" + key.replace("_", "-"))
        if value is not True:
            flags.append(str(value))
    return tuple(flags)


CPU_SERVER_ARGS = server_flags(CPU_SETTINGS)
# Test-only settings (SGLang's defaults otherwise: the overlap scheduler runs).
TEST_SERVER_ARGS = ("--random-seed", "0", "--log-level", "error")


@contextlib.contextmanager
def launch_server(model_path: str, log_path, env, attention_backend: str = "npr", max_total_tokens: int = 8192,
                  max_running_requests: int = 16):
    """`python -m sglang.launch_server` on loopback (CPU); yields its base URL once /server_info answers;
    stopped on exit. `env`: the server's environment (tests.hosts.make_env)."""
    port = free_port()
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sglang.launch_server", "--model-path", model_path, "--host", "127.0.0.1",
         "--port", str(port), "--attention-backend", attention_backend, *CPU_SERVER_ARGS,
         "--max-total-tokens", str(max_total_tokens), "--max-running-requests", str(max_running_requests),
         *TEST_SERVER_ARGS],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while True:
            if proc.poll() is not None:
                log.flush()
                raise RuntimeError(f"launch_server exited with {proc.returncode}; see {log_path}")
            try:
                with urllib.request.urlopen(f"{base}/server_info", timeout=10):
                    break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


async def abort_while_paused(engine, rids) -> None:
    """Abort `rids` on a sglang.Engine while its scheduler is paused in place (SGLang's
    pause_generation "in_place": no batch runs, messages are still taken). Pause, aborts and continue
    reach the scheduler in order on one socket, so a request seen running (it streamed a chunk) and
    with hundreds of steps left is still running when its abort is processed: the abort cannot race
    the request's own end."""
    from sglang.srt.managers.io_struct import ContinueGenerationReqInput, PauseGenerationReqInput

    manager = engine.tokenizer_manager
    await manager.pause_generation(PauseGenerationReqInput(mode="in_place"))
    for rid in rids:
        manager.abort_request(rid=rid)
    await manager.continue_generation(ContinueGenerationReqInput())


def save_tiny_model(directory, seed: int = 0) -> str:
    from npr.tiny import save_tiny

    return save_tiny(directory, seed=seed)


def assert_partial_of(prompt, ids, ref_ids, tags, max_branches: int = 5) -> None:
    """An aborted fork-join output is the reference cut per sequence: its trunk segments and each
    branch it reached are prefixes of the reference's (an open block keeps its partial branches in
    order, so the whole output is not a prefix of the finished one)."""
    from npr.layout import build_layout

    def segments(response):
        layout = build_layout(list(prompt) + list(response), tags, len(prompt), max_branches=max_branches)
        out: dict[tuple[int, int], list[int]] = {}
        start = len(prompt)
        for token, block, branch in zip(response, layout.block_id.tolist()[start:], layout.branch_id.tolist()[start:]):
            out.setdefault((block, branch), []).append(token)
        return out

    got, want = segments(ids), segments(ref_ids)
    for key, tokens in got.items():
        assert tokens == want.get(key, [])[:len(tokens)], f"segment {key}: {tokens} is not a prefix of {want.get(key)}"


# Two requests of one prompt are not computed in the same kernel shapes: the radix cache decides how much
# of the prompt is prefilled again, and the batch a step rides in (row count, row order) changes the BLAS
# blocking. Their log-probs then agree to float rounding, not to the bit (CI's Intel CPU: 1e-6 apart;
# the 2-core AMD EPYC: equal), while their token ids are equal. A real mismatch (a row reading another
# row's KV, a skipped token) moves log-probs by far more than this.
SAME_REQUEST_LOGPROB_TOL = 1e-5


def assert_same_logprobs(got, want, tol: float = SAME_REQUEST_LOGPROB_TOL) -> None:
    """`output_token_logprobs` of two requests of one prompt: equal token ids, values within `tol`."""
    assert [lp[1] for lp in got] == [lp[1] for lp in want]
    worst = max((abs(a[0] - b[0]) for a, b in zip(got, want)), default=0.0)
    assert len(got) == len(want) and worst <= tol, f"log-probs {worst:.2e} apart (tolerance {tol:.0e})"
