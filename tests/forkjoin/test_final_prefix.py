"""What a streaming engine may send (`npr.forkjoin.final_prefix`; the SGLang plugin streams it), on the
fake engine of the contract harness, in every feeding mode:
after every step of randomized runs (forks, strays, budgets, full KV caches, preemptions, aborts), the
prefix it calls final is a prefix of the finished output, ids and log-probs alike, and never shrinks
except across a preemption (whose restart reproduces it)."""

import pytest

from npr.forkjoin import Finish, final_prefix
from npr.forkjoin.contract import FEEDING_MODES, make_random_run


@pytest.mark.parametrize("mode", list(FEEDING_MODES))
@pytest.mark.parametrize("chunk", range(2))
def test_streamed_prefix_is_final(chunk, mode):
    seen = {"streamed": 0, "preempted": 0, "aborted": 0, "cut": 0, "short after a restart": 0}
    for trial in range(chunk * 120, chunk * 120 + 120):
        _, controller, engine, _, aborts = make_random_run(trial, mode)
        sent: dict = {}  # req_id -> (ids, logprobs) streamed so far
        finishes: list[Finish] = []

        def stream():
            for request in controller.running:
                ids, logprobs = sent.setdefault(request.req_id, ([], []))
                length, new_ids, new_logprobs = final_prefix(request, len(ids))
                if length >= len(ids):
                    _, full_ids, full_logprobs = final_prefix(request)
                    assert (full_ids[:len(ids)], full_logprobs[:len(ids)]) == (ids, logprobs)
                    ids += new_ids
                    logprobs += new_logprobs
                else:
                    assert request.num_preemptions > 0, "a final prefix shrank without a preemption"

        while controller.has_work:
            for request in list(controller.running) + list(controller.waiting):
                if aborts.get(request.req_id) == engine.num_steps:
                    finishes += [e for e in controller.abort(request) if isinstance(e, Finish)]
            plan = controller.plan()
            finishes += [e for e in plan.events if isinstance(e, Finish)]
            results = [engine._run_work(work) for work in plan.works]
            finishes += [e for e in controller.commit(plan, results) if isinstance(e, Finish)]
            engine.num_steps += 1
            stream()
        for finish in finishes:
            ids, logprobs = sent.get(finish.request.req_id, ([], []))
            traj = finish.trajectory
            if traj.token_ids[:len(ids)] != ids or list(traj.logprobs[:len(ids)]) != logprobs:
                # Only a restarted request can end before what it had streamed (an abort or a full KV
                # cache after its restart): NprEngine ends it with an abort error then.
                assert finish.request.num_preemptions > 0 and len(traj.token_ids) < len(ids), (trial, finish.reason)
                assert traj.token_ids == ids[:len(traj.token_ids)]
                seen["short after a restart"] += 1
                continue
            seen["streamed"] += bool(ids) and len(ids) < len(traj.token_ids)
            seen["preempted"] += bool(ids) and finish.request.num_preemptions > 0
            seen["aborted"] += bool(ids) and finish.reason == "abort"
            seen["cut"] += any("output cut" in note for note in traj.notes)
    assert seen["streamed"] and seen["aborted"] and seen["preempted"] and seen["cut"], seen
