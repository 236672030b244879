"""Tensor-parallel ranks each run a scheduler over the same requests, so fork-join needs every rank to
make the same decisions from the same inputs, whatever its process state. Two processes with different
hash seeds (string rids hash differently) and different global RNG states drive the controller through
randomized SGLang-style runs (prefilled prompts, one token per step, per-request limits, aborts) and
derive unseeded requests' seeds (`sglang_npr.engine.sampling.choice_of`): the traces of every plan
(which sequence feeds which tokens at which positions) and event, and the seeds, must be identical.
(SGLang 0.5.23 does not run tp=2 on this CPU; this is the rank-independence a tp run relies on.)"""

import json
import subprocess
import sys

TRACE = r"""
import hashlib, json, random, sys
random.seed(int(sys.argv[1]))
_ = [random.random() for _ in range(int(sys.argv[1]))]

from npr.forkjoin.contract import make_random_run
from sglang_npr.engine.sampling import choice_of

trace = []
for trial in range(60):
    _, controller, engine, _, aborts = make_random_run(trial, "sglang", rid=lambda r: f"{trial:04x}{r:028x}")
    plan_of = controller.plan

    def traced_plan(plan_of=plan_of):
        plan = plan_of()
        trace.append([[w.seq.request.req_id, w.seq.block, w.seq.branch, list(w.tokens), list(w.positions), w.sample]
                      for w in plan.works] + [type(e).__name__ + ":" + str(e.request.req_id) for e in plan.events])
        return plan

    controller.plan = traced_plan
    finishes = engine.run(abort_at=aborts)
    trace.append(sorted([str(f.request.req_id), f.reason, f.trajectory.token_ids, list(f.positions)] for f in finishes))


class Params:
    temperature, top_p, top_k, sampling_seed = 0.7, 0.9, -1, None


seeds = [choice_of(Params, 1000, f"rid-{i}", 1234).seed for i in range(50)]
print(json.dumps({"trace": hashlib.sha256(json.dumps(trace).encode()).hexdigest(), "steps": len(trace),
                  "seeds": seeds}))
"""


def _run(hash_seed: str, rng_seed: int) -> dict:
    env = {"PYTHONHASHSEED": hash_seed, "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", TRACE, str(rng_seed)], capture_output=True, text=True, env=env,
                         cwd=str(__import__("pathlib").Path(__file__).resolve().parents[2]), check=True)
    return json.loads(out.stdout)


def test_two_ranks_make_the_same_decisions():
    first, second = _run("1", 3), _run("2", 17)
    assert first["steps"] > 1000  # the runs really stepped
    assert first == second
    assert len(set(first["seeds"])) == len(first["seeds"])  # unseeded requests still differ from each other
