"""Time-bounded verification: deadlines, worker restarts, no leaked processes, any thread, asyncio."""

import asyncio
import os
import sys
import threading
import time

import pytest

from reward import grade
from reward.verify import VerifierPool, WorkerError, get_pool, shutdown, timeout_from_env, verify_equivalent

PATHOLOGICAL = "\\boxed{9^{9^{9^{9}}}}"  # sympy evaluates the tower; never finishes
TIMEOUT_S = 1.0
MARGIN_S = 0.75  # killing and reaping a worker, scheduling noise on 2 cores

# A worker that starts, reads requests and never answers: only the parent's hard deadline ends it.
SILENT_WORKER = [sys.executable, "-c",
                 "import json, sys; print(json.dumps({'ready': 1}), flush=True)\nfor _ in sys.stdin: pass"]
DEAD_WORKER = [sys.executable, "-c", "import sys; sys.exit(3)"]


def _is_alive(pid: int) -> bool:
    """True while the process exists, zombies included (an unreaped worker is a leak too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module", autouse=True)
def warm_pool():
    assert grade("\\boxed{1}", "1")  # start a worker outside the timed sections
    yield


def test_pathological_expression_returns_incorrect_within_the_timeout():
    assert grade("\\boxed{2}", "2")  # a worker's start is outside the bound (documented): warm one first
    start = time.monotonic()
    assert grade(PATHOLOGICAL, "5", timeout_s=TIMEOUT_S) is False
    assert time.monotonic() - start < TIMEOUT_S + MARGIN_S
    assert grade("\\boxed{2}", "2")  # the pool still works afterwards


def test_timeout_is_reported_and_not_cached():
    pairs = [("5", "9^{9^{9^{9}}}")]
    assert verify_equivalent(pairs, TIMEOUT_S).status == "timeout"
    assert verify_equivalent(pairs, TIMEOUT_S).status == "timeout"


def test_hard_deadline_kills_a_stuck_worker_and_replaces_it():
    pool = VerifierPool(max_workers=1, command=SILENT_WORKER)
    try:
        start = time.monotonic()
        verdict = pool.verify([("1", "1")], 0.5)
        assert time.monotonic() - start < 0.5 + MARGIN_S
        assert (verdict.ok, verdict.status) == (False, "timeout")
        assert (pool.num_timeouts, pool.num_restarts) == (1, 1)
        (replacement,) = pool._idle
        verdict = pool.verify([("1", "1")], 0.3)
        assert verdict.status == "timeout" and replacement.proc.poll() is not None
    finally:
        pool.close()
    assert pool.worker_pids == []


def _worker_children() -> list[int]:
    """Pids of this process's verify workers (read from /proc)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmdline = f.read()
            except (OSError, ValueError, IndexError):
                continue
            if ppid == os.getpid() and b"_verify_worker" in cmdline:
                pids.append(int(entry))
    return pids


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc")
def test_closing_a_pool_while_it_is_busy_leaves_no_worker():
    before = set(_worker_children())
    pool = VerifierPool(max_workers=1)
    box = {}
    thread = threading.Thread(target=lambda: box.setdefault("v", pool.verify([("5", "9^{9^{9^{9}}}")], TIMEOUT_S)))
    thread.start()
    deadline = time.monotonic() + 30
    while not set(_worker_children()) - before and time.monotonic() < deadline:
        time.sleep(0.01)
    pool.close()
    thread.join(30)
    assert box["v"].ok is False
    assert set(_worker_children()) - before == set()


def test_a_worker_that_dies_raises_and_frees_its_slot():
    pool = VerifierPool(max_workers=1, command=DEAD_WORKER, start_timeout_s=10)
    with pytest.raises(WorkerError):
        pool.verify([("1", "1")], 1.0)
    with pytest.raises(WorkerError):  # the slot was freed: a second call does not block forever
        pool.verify([("1", "1")], 1.0)
    pool.close()


def test_shutdown_leaves_no_worker_processes():
    assert grade("\\boxed{3}", "3.0")
    pids = get_pool().worker_pids
    assert pids
    shutdown()
    assert not any(_is_alive(pid) for pid in pids)
    assert grade("\\boxed{\\frac{6}{2}}", "3")  # a new pool starts on demand


def test_works_from_worker_threads_concurrently():
    results = {}

    def work(i):
        results[i] = grade(f"\\boxed{{\\frac{{{2 * i}}}{{2}}}}", str(i))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: True for i in range(8)}


def test_pathological_expression_in_a_worker_thread():
    box = {}
    start = time.monotonic()
    thread = threading.Thread(target=lambda: box.setdefault("r", grade(PATHOLOGICAL, "6", timeout_s=TIMEOUT_S)))
    thread.start()
    thread.join(TIMEOUT_S + 5)
    assert box == {"r": False} and time.monotonic() - start < TIMEOUT_S + MARGIN_S


def test_works_inside_a_running_asyncio_loop():
    async def main():
        loop = asyncio.get_running_loop()
        inline = grade("\\boxed{\\sqrt{4}}", "2")  # called on the loop's own thread
        slow = grade(PATHOLOGICAL, "7", timeout_s=TIMEOUT_S)
        in_executor = await loop.run_in_executor(None, grade, "\\boxed{0.5}", "\\frac{1}{2}")
        return inline, slow, in_executor

    start = time.monotonic()
    assert asyncio.run(main()) == (True, False, True)
    assert time.monotonic() - start < TIMEOUT_S + 2 * MARGIN_S


def test_timeout_configuration(monkeypatch):
    monkeypatch.setenv("NPR_REWARD_TIMEOUT_S", "2.5")
    assert timeout_from_env() == 2.5 and timeout_from_env(0.5) == 0.5
    monkeypatch.setenv("NPR_REWARD_TIMEOUT_S", "soon")
    with pytest.raises(ValueError, match="NPR_REWARD_TIMEOUT_S"):
        timeout_from_env()
    monkeypatch.delenv("NPR_REWARD_TIMEOUT_S")
    assert timeout_from_env() == 5.0
    with pytest.raises(ValueError):
        timeout_from_env(-1)


def test_pool_rejects_bad_sizes():
    with pytest.raises(ValueError, match="max_workers"):
        VerifierPool(max_workers=0)


@pytest.mark.parametrize("raw", ["inf", "1e12", "nan", "-inf", "0", "3601"])
def test_no_timeout_is_refused_naming_the_variable(monkeypatch, raw):
    from reward import compute_score

    monkeypatch.setenv("NPR_REWARD_TIMEOUT_S", raw)
    with pytest.raises(ValueError, match=f"NPR_REWARD_TIMEOUT_S={raw!r}.*default is 5"):
        timeout_from_env()
    with pytest.raises(ValueError, match="NPR_REWARD_TIMEOUT_S"):  # refused when the setting is read,
        compute_score("x", "\\boxed{1}", "1")  # not as an internal error on every correct answer
    with pytest.raises(ValueError, match="timeout_s=inf"):
        grade("\\boxed{1}", "2", timeout_s=float("inf"))


def test_the_largest_timeout_works():
    assert grade("\\boxed{\\frac{4}{2}}", "2", timeout_s=3600)


@pytest.mark.parametrize("error", [OverflowError("huge"), RuntimeError("boom"), KeyboardInterrupt()])
def test_any_exception_in_a_verification_gives_the_worker_back(monkeypatch, error):
    from reward import verify as verify_module

    pool = VerifierPool(max_workers=1)
    start = pool.num_free
    try:
        def fail(self, pairs, timeout_s):
            raise error

        with monkeypatch.context() as patch:
            patch.setattr(verify_module._Worker, "request", fail)
            for _ in range(3):  # the third call used to block forever
                with pytest.raises((type(error), WorkerError)):
                    pool.verify([("1", "1")], 1.0)
                assert pool.num_free == start
        box = {}
        thread = threading.Thread(target=lambda: box.setdefault("v", pool.verify([("2", "\\frac{4}{2}")], 30)))
        thread.start()
        thread.join(120)
        assert box["v"].ok and pool.num_free == start
    finally:
        pool.close()


def test_a_failing_worker_scores_as_error_not_raised(monkeypatch):
    from reward import verify as verify_module

    def fail(self, pairs, timeout_s):
        raise OverflowError("converting the timeout")

    monkeypatch.setattr(verify_module._Worker, "request", fail)
    verify_module.clear_cache()
    start = get_pool().num_free
    assert verify_equivalent([("3", "\\frac{9}{3}")], 1.0).status == "error"
    assert get_pool().num_free == start


def test_waiting_for_a_worker_counts_against_the_timeout():
    """The deadline covers queueing: with the only worker held, a call returns "timeout" rather than waiting."""
    pool = VerifierPool(max_workers=1, command=SILENT_WORKER)
    try:
        held = pool._acquire(time.monotonic() + 5)
        assert pool.num_free == 0
        box = {}
        thread = threading.Thread(target=lambda: box.setdefault("v", pool.verify([("1", "1")], 0.3)))
        thread.start()
        thread.join(60)
        assert not thread.is_alive() and box["v"].status == "timeout" and pool.num_busy == 1
        pool._release(held)
        assert pool.num_free == 1
    finally:
        pool.close()


def test_the_pool_grows_with_the_callers_concurrency():
    """Concurrent calls each get a worker (up to max_workers), so one slow answer does not delay the others."""
    pool = VerifierPool(max_workers=4, command=SILENT_WORKER)
    try:
        threads = [threading.Thread(target=pool.verify, args=([("1", "1")], 0.5)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert pool.num_busy == 0 and pool.num_timeouts == 4  # each waited on its own worker, none queued
        assert pool.num_free == 4
    finally:
        pool.close()


def test_default_pool_size_follows_the_cpus(monkeypatch):
    from reward.verify import MAX_DEFAULT_WORKERS, default_num_workers

    monkeypatch.delenv("NPR_REWARD_WORKERS", raising=False)
    assert 1 <= default_num_workers() <= min(MAX_DEFAULT_WORKERS, os.cpu_count())
    monkeypatch.setenv("NPR_REWARD_WORKERS", "3")
    assert VerifierPool().max_workers == 3
    monkeypatch.setenv("NPR_REWARD_WORKERS", "many")
    with pytest.raises(ValueError, match="NPR_REWARD_WORKERS must be an integer, got 'many'"):
        VerifierPool()


def test_a_worker_that_died_while_idle_is_replaced_not_blamed():
    """A worker killed between requests (OOM killer, a stray signal) must not turn a correct answer into
    an "error" verdict: nothing was verified, so a fresh worker takes the request."""
    pool = VerifierPool(max_workers=1)
    try:
        assert pool.verify([("3", "\\frac{9}{3}")], 20.0).ok
        [worker] = pool._idle
        worker.proc.kill()
        worker.proc.wait()
        verdict = pool.verify([("3", "\\frac{9}{3}")], 20.0)
        assert verdict.ok and verdict.status == "ok"
        assert pool.num_free == 1 and worker not in pool._idle
    finally:
        pool.close()
