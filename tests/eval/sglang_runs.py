"""Helpers (not a test module) for the SGLang eval tests: one small benchmark fixture, the greedy scripted
config both engines run, the record-by-record comparison against the reference decoder, and a loopback
`sglang.launch_server` on CPU."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.request

from npr.eval import EvalConfig

LOGPROB_TOL = 1e-4
SCRIPT = "3,5/2,4,1"


def write_fixture(folder) -> str:
    path = folder / "aime.jsonl"
    with open(path, "w") as f:
        for i in range(2):
            f.write(json.dumps({"question": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n")
    return str(path)


def greedy_config(source: str, out, model_path: str, engine: str = "reference", **kw) -> EvalConfig:
    return EvalConfig(benchmarks=[{"name": "aime25", "source": source}], engine=engine, model=model_path,
                      device="cpu", dtype="float32", n=2, temperature=0.0, max_new_tokens=48, script=SCRIPT,
                      pass_k=(1,), output_dir=str(out), progress=False, **kw)


def assert_same_trajectories(records, reference_records, has_blocks: bool = True) -> None:
    """has_blocks=False: the engine's API does not report how branches ended (OpenAI-compatible)."""
    key = lambda r: (r["benchmark"], r["mode"], r["problem_id"], r["sample"])  # noqa: E731
    ref = {key(r): r for r in reference_records}
    assert sorted(map(key, records)) == sorted(ref)
    modes = set()
    for r in records:
        want, got = ref[key(r)]["trajectory"], r["trajectory"]
        assert got["prompt_ids"] == want["prompt_ids"] and got["token_ids"] == want["token_ids"], key(r)
        assert got["stats"] == want["stats"] and got["finish_reason"] == want["finish_reason"], key(r)
        assert got["refused_forks"] == want["refused_forks"], key(r)
        if has_blocks:
            assert got["blocks"] == want["blocks"], key(r)
        assert max((abs(a - b) for a, b in zip(got["logprobs"], want["logprobs"])), default=0.0) <= LOGPROB_TOL
        for field in ("text", "widths", "critical_path_tokens", "correct", "format_score"):
            assert r[field] == ref[key(r)][field], (key(r), field)
        modes.add(r["mode"])
    assert modes == {"parallel", "sequential"}
    assert any(r["widths"] == [2, 3] for r in records if r["mode"] == "parallel")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def launch_server(model_path: str, log_path, env, attention_backend: str = "npr"):
    """`python -m sglang.launch_server` on loopback (CPU); yields its base URL; stopped on exit."""
    port = _free_port()
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sglang.launch_server", "--model-path", model_path, "--host", "127.0.0.1",
         "--port", str(port), "--device", "cpu", "--attention-backend", attention_backend, "--disable-cuda-graph",
         "--dtype", "float32", "--mem-fraction-static", "0.3", "--max-total-tokens", "8192",
         "--max-running-requests", "16", "--disable-overlap-schedule", "--random-seed", "0", "--log-level", "error"],
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
