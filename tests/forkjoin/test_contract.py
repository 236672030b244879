"""The contract harness (npr.forkjoin.contract) on the fake engine: randomized structures, budgets, KV
capacities, batch limits and aborts keep every invariant; an engine failure returns every slot."""

import random

import pytest

from npr.forkjoin import Finish, ForkJoinController, Limits, SlotManager, WorkResult
from npr.forkjoin.contract import (
    FAKE_CONTENT,
    FAKE_EOS,
    FEEDING_MODES,
    FakeEngine,
    check_fake_logprobs,
    check_finish,
    fake_templates,
    make_random_run,
    random_limits,
    random_trunk_script,
)


@pytest.mark.parametrize("mode", list(FEEDING_MODES))
@pytest.mark.parametrize("chunk", range(4))
def test_randomized_runs_keep_every_invariant(chunk, mode):
    seen = {"forks": 0, "aborts": 0, "preemptions": 0, "stray": 0, "refused": 0}
    for trial in range(chunk * 80, chunk * 80 + 80):
        _, controller, engine, count, aborts = make_random_run(trial, mode)
        finishes = engine.run(abort_at=aborts)
        assert sorted(f.request.req_id for f in finishes) == list(range(count)), "each request finishes once"
        assert controller.slots.num_used == 0, "every slot returned"
        for finish in finishes:
            limits = finish.request.limits
            check_finish(finish, limits, fake_templates())
            if not any("output cut" in note for note in finish.trajectory.notes):
                check_fake_logprobs(finish, limits, fake_templates())
            else:  # a cut only follows a full KV cache
                assert any("KV cache full" in note for note in finish.trajectory.notes)
            seen["forks"] += finish.trajectory.stats["num_forks"]
            seen["aborts"] += finish.reason == "abort"
            seen["preemptions"] += finish.request.num_preemptions
            seen["stray"] += sum(end == "stray" for ends in finish.trajectory.blocks for end in ends)
            seen["refused"] += len(finish.trajectory.refused_forks)
    assert all(seen.values()), f"the randomized runs must exercise every path: {seen}"


@pytest.mark.parametrize("fail_at", [0, 3, 17, 40])
def test_engine_failure_returns_every_slot(fail_at):
    limits, controller, engine, count, _ = make_random_run(1000 + fail_at)
    try:
        engine.run(fail_at=fail_at)
    except RuntimeError as err:
        assert "fake engine failure" in str(err)
    assert controller.slots.num_used == 0 and not controller.has_work


def test_abort_inside_a_block_scores_every_token():
    """An abort mid-block feeds the pending tokens once more, so later branches' first tokens keep
    their log-prob (regression: NaN at the forced <step> of later branches)."""
    limits = Limits(max_branches=3, max_new_tokens=200)
    t = fake_templates().tags
    for abort_step in range(3, 25):
        controller = ForkJoinController(limits, fake_templates(), [FAKE_EOS])
        engine = FakeEngine(controller, seed=abort_step)
        engine.chaos.stray = engine.chaos.eos_in_branch = engine.chaos.nested = 0
        script = [t.guideline_open] + [t.plan_open, 101, t.plan_close] * 3 + [t.guideline_close, t.takeaway_open,
                                                                            102, t.takeaway_close, 103, FAKE_EOS]
        engine.add(0, [100, 101], script)
        [finish] = engine.run(abort_at={0: abort_step})
        check_finish(finish, limits, fake_templates())
        check_fake_logprobs(finish, limits, fake_templates())
        assert controller.slots.num_used == 0


def test_total_budget_is_reserved_across_branches():
    """Three branches with two tokens of budget left write two tokens, never three."""
    t = fake_templates().tags
    header = len(fake_templates().branch_header(1))
    for total in range(12, 40):
        limits = Limits(max_branches=3, max_new_tokens=200, max_total_tokens=total, min_fork_budget=0)
        controller = ForkJoinController(limits, fake_templates(), [FAKE_EOS])
        engine = FakeEngine(controller, seed=total)
        engine.chaos.stray = engine.chaos.eos_in_branch = engine.chaos.nested = 0
        engine.add(0, [100], [t.guideline_open] + [t.plan_open, t.plan_close] * 3 + [t.guideline_close, FAKE_EOS])
        [finish] = engine.run()
        check_finish(finish, limits, fake_templates())
        assert finish.trajectory.stats["total_tokens"] <= total
        assert header > 0 and controller.slots.num_used == 0


def test_protocol_errors_are_clear():
    controller = ForkJoinController(Limits(), fake_templates(), [FAKE_EOS])
    with pytest.raises(ValueError, match="empty prompt"):
        controller.add_request(0, [])
    with pytest.raises(ValueError, match="no stop token"):
        ForkJoinController(Limits(), fake_templates(), [])
    with pytest.raises(ValueError, match="cannot fit 4 KV slots"):
        ForkJoinController(Limits(), fake_templates(), [FAKE_EOS], SlotManager(4)).add_request(0, [1, 2, 3, 4])
    first = controller.add_request(0, [100, 101])
    plan = controller.plan()
    with pytest.raises(ValueError, match="one per work"):
        controller.commit(plan, [])
    waiting = controller.add_request(1, [100])
    [finish] = controller.abort(waiting)  # never admitted: finished at once, empty
    assert isinstance(finish, Finish) and finish.trajectory.token_ids == [] and finish.reason == "abort"
    assert controller.abort(first) == []  # its prompt is still pending: fed once more, then finished
    plan = controller.plan()
    assert [w.sample for w in plan.works] == [False]
    [finish] = controller.commit(plan, [WorkResult(scores=[])])
    assert finish.reason == "abort" and controller.slots.num_used == 0 and not controller.has_work


def test_how_an_engine_feeds_does_not_change_any_output():
    """Whole runs, one token per step, engine-prefilled prompts: with no capacity limit or abort in
    play, every mode gives the same trajectories, token for token and log-prob for log-prob."""
    for trial in range(60):
        outputs = {}
        for mode, (feed_limit, prefill, _) in FEEDING_MODES.items():
            rng = random.Random(trial)
            limits = random_limits(rng)
            controller = ForkJoinController(limits, fake_templates(), [FAKE_EOS], feed_limit=feed_limit)
            engine = FakeEngine(controller, seed=trial, prefill=prefill)
            for r in range(rng.randint(1, 4)):
                engine.add(r, [rng.choice(FAKE_CONTENT) for _ in range(rng.randint(1, 8))],
                           random_trunk_script(rng, limits.max_branches))
            finishes = sorted(engine.run(), key=lambda f: f.request.req_id)
            outputs[mode] = [(f.trajectory.to_dict(), f.positions) for f in finishes]
        first = outputs["whole-runs"]
        for mode, got in outputs.items():
            assert got == first, f"trial {trial}: {mode} differs from whole runs"


def test_each_request_keeps_its_own_limits():
    """One controller, requests with different limits: each output is bounded by its own."""
    t = fake_templates().tags
    controller = ForkJoinController(Limits(max_new_tokens=200), fake_templates(), [FAKE_EOS], feed_limit=1)
    engine = FakeEngine(controller, seed=3, prefill=True)
    engine.chaos.stray = engine.chaos.eos_in_branch = engine.chaos.nested = 0
    script = [t.guideline_open] + [t.plan_open, 101, t.plan_close] * 2 + [t.guideline_close] + [102] * 50 + [FAKE_EOS]
    budgets = {0: None, 1: 12, 2: 30}
    for r, budget in budgets.items():
        own = None if budget is None else Limits(max_new_tokens=budget, min_fork_budget=0)
        engine.add(r, [100, 101], script, limits=own)
    finishes = {f.request.req_id: f for f in engine.run()}
    for r, budget in budgets.items():
        check_finish(finishes[r], finishes[r].request.limits, fake_templates())
        critical = finishes[r].trajectory.stats["critical_path_tokens"]
        assert critical <= (budget or 200)
    assert finishes[1].reason == "length" and finishes[0].reason == "stop"
