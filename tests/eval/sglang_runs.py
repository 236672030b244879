"""Helpers (not a test module) for the SGLang eval tests: one small benchmark fixture, the greedy scripted
config both engines run, the record-by-record comparison against the reference decoder, and a loopback
`sglang.launch_server` on CPU (tests.sglang_npr.engines.launch_server)."""

from __future__ import annotations

import json

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
