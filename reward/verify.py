"""Time-bounded math-verify: persistent worker processes with a hard deadline, usable from any thread
and inside a running asyncio loop (where math-verify's own signal-based timeout cannot work).

A request that passes its deadline gets "not equivalent"; its worker is killed (SIGKILL, reaped) and a
replacement starts at once. Workers read their requests from a pipe and exit when it closes, so none
outlives the pool. Configuration: `NPR_REWARD_TIMEOUT_S` (default 5), `NPR_REWARD_WORKERS` (default
min(2, CPUs)), `NPR_REWARD_START_TIMEOUT_S` (worker start, default 120), `NPR_REWARD_WORKER_MEMORY_MB`
(address-space limit per worker, default none); a `timeout_s` argument wins.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import select
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

logger = logging.getLogger(__name__)

WORKER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_verify_worker.py")
DEFAULT_TIMEOUT_S = 5.0
_GRACE_S = 0.2  # the worker's own timer fires this much before the hard deadline (capped at a quarter)


def timeout_from_env(timeout_s: float | None = None) -> float:
    """The verification timeout: the argument, else NPR_REWARD_TIMEOUT_S, else 5 s. Raises ValueError if <= 0."""
    if timeout_s is None:
        raw = os.environ.get("NPR_REWARD_TIMEOUT_S", "")
        try:
            timeout_s = float(raw) if raw.strip() else DEFAULT_TIMEOUT_S
        except ValueError:
            raise ValueError(f"NPR_REWARD_TIMEOUT_S must be a number of seconds, got {raw!r}") from None
    if not timeout_s > 0:
        raise ValueError(f"the reward verification timeout must be > 0 seconds, got {timeout_s!r}")
    return float(timeout_s)


@dataclass(frozen=True)
class Verdict:
    """Outcome of one verification: `ok` (equivalent) and `status` "ok" | "timeout" | "error"."""

    ok: bool
    status: str = "ok"


class WorkerError(RuntimeError):
    """A worker could not be started or died; the pool replaces it."""


class _Worker:
    """One worker process and its line-buffered reply pipe."""

    def __init__(self, command: list[str]):
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, close_fds=True)
        self.buffer = b""
        self.is_ready = False

    def read_line(self, deadline: float) -> dict | None:
        """The next reply line, or None at the deadline. Raises WorkerError when the worker died."""
        fd = self.proc.stdout.fileno()
        poller = select.poll()  # not select.select: it fails on descriptors >= 1024 (busy Ray workers)
        poller.register(fd, select.POLLIN)
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not poller.poll(max(1, int(remaining * 1000 + 0.999))):
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                raise WorkerError(f"verify worker {self.proc.pid} exited (code {self.proc.poll()})")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def wait_ready(self, start_timeout_s: float) -> None:
        if self.is_ready:
            return
        reply = self.read_line(time.monotonic() + start_timeout_s)
        if reply is None or "ready" not in reply:
            raise WorkerError(f"verify worker did not start: {reply or f'no reply in {start_timeout_s} s'}")
        self.is_ready = True

    def request(self, pairs: list[tuple[str, str]], timeout_s: float) -> dict | None:
        """Send one request; the reply, or None when the hard deadline passed."""
        deadline = time.monotonic() + timeout_s
        inner = max(0.01, timeout_s - min(_GRACE_S, timeout_s / 4))
        self.proc.stdin.write((json.dumps({"pairs": pairs, "timeout": inner}) + "\n").encode())
        self.proc.stdin.flush()
        return self.read_line(deadline)

    def close(self, kill: bool = False) -> None:
        try:
            if kill:
                self.proc.kill()
            else:
                self.proc.stdin.close()  # the worker exits at end of input
            self.proc.wait(timeout=2)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass


class VerifierPool:
    """Up to `max_workers` worker processes shared by all threads of this process. `command` starts
    one worker (default: this interpreter on `_verify_worker.py`)."""

    def __init__(self, max_workers: int | None = None, start_timeout_s: float | None = None,
                 command: list[str] | None = None):
        if max_workers is None:
            max_workers = int(os.environ.get("NPR_REWARD_WORKERS", "0") or 0) or min(2, os.cpu_count() or 1)
        if max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {max_workers}")
        self.max_workers = max_workers
        self.command = list(command or [sys.executable, "-u", WORKER_SCRIPT])
        self.start_timeout_s = start_timeout_s or float(os.environ.get("NPR_REWARD_START_TIMEOUT_S", "120"))
        self.pid = os.getpid()
        self._idle: list[_Worker] = []
        self._num_workers = 0
        self._cond = threading.Condition()
        self._closed = False
        self.num_timeouts = 0
        self.num_restarts = 0

    def verify(self, pairs: list[tuple[str, str]], timeout_s: float) -> Verdict:
        """True when any (gold, pred) pair is equivalent; never blocks past `timeout_s` once a worker is ready.

        Raises WorkerError when no worker can be started.
        """
        worker = self._acquire()
        try:
            worker.wait_ready(self.start_timeout_s)
            reply = worker.request(pairs, timeout_s)
        except (WorkerError, OSError, ValueError) as exc:
            self._discard(worker)
            raise WorkerError(str(exc)) from exc
        if reply is None:  # hard deadline: the worker is stuck (e.g. in C code); kill it
            self.num_timeouts += 1
            self._discard(worker, replace=True)
            return Verdict(False, "timeout")
        self._release(worker)
        if "ok" in reply:
            return Verdict(bool(reply["ok"]))
        return Verdict(False, "timeout" if reply.get("timeout") else "error")

    def _acquire(self) -> _Worker:
        with self._cond:
            while not self._idle and self._num_workers >= self.max_workers:
                self._cond.wait()
            if self._idle:
                return self._idle.pop()
            self._num_workers += 1
        try:
            return _Worker(self.command)
        except OSError as exc:
            with self._cond:
                self._num_workers -= 1
                self._cond.notify()
            raise WorkerError(f"cannot start a verify worker: {exc}") from exc

    def _release(self, worker: _Worker) -> None:
        with self._cond:
            if not self._closed:
                self._idle.append(worker)
                self._cond.notify()
                return
            self._num_workers -= 1
        worker.close()  # the pool was closed while this worker was busy

    def _discard(self, worker: _Worker, replace: bool = False) -> None:
        worker.close(kill=True)
        replacement = None
        if replace and not self._closed:
            try:
                replacement = _Worker(self.command)  # starts now, so the next request finds it warm
                self.num_restarts += 1
            except OSError:
                replacement = None
        with self._cond:
            if replacement is not None:
                self._idle.append(replacement)
            else:
                self._num_workers -= 1
            self._cond.notify()

    def close(self) -> None:
        """Stop every idle worker (busy ones are stopped when their request returns)."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._num_workers -= len(idle)
        for worker in idle:
            worker.close()

    @property
    def worker_pids(self) -> list[int]:
        with self._cond:
            return [w.proc.pid for w in self._idle]


class _LruCache:
    """A small thread-safe LRU map for definitive verdicts."""

    def __init__(self, max_size: int = 4096):
        self.max_size = max_size
        self._data: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
        return None

    def put(self, key, value) -> None:
        with self._lock:
            self._data[key] = value
            if len(self._data) > self.max_size:
                self._data.popitem(last=False)


_POOL: VerifierPool | None = None
_POOL_LOCK = threading.Lock()
_CACHE = _LruCache()


def clear_cache() -> None:
    """Forget cached verdicts (tests; a changed math-verify)."""
    with _CACHE._lock:
        _CACHE._data.clear()


def get_pool() -> VerifierPool:
    """The process-wide pool (a fresh one in a forked child: the parent's pipes are not ours)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL.pid != os.getpid():
            _POOL = VerifierPool()
        return _POOL


def shutdown() -> None:
    """Stop this process's workers (also registered with atexit)."""
    global _POOL
    with _POOL_LOCK:
        pool, _POOL = _POOL, None
    if pool is not None and pool.pid == os.getpid():
        pool.close()


atexit.register(shutdown)


def verify_equivalent(pairs: list[tuple[str, str]], timeout_s: float | None = None) -> Verdict:
    """Whether any (gold, pred) LaTeX pair is mathematically equivalent (math-verify), within `timeout_s`.

    A timeout or a failed worker is "not equivalent" with status "timeout" / "error"; raises only
    ValueError for a bad timeout setting.
    """
    key = tuple(pairs)
    cached = _CACHE.get(key)
    if cached is not None:
        return cached
    try:
        verdict = get_pool().verify([list(p) for p in pairs], timeout_from_env(timeout_s))
    except WorkerError as exc:
        logger.error("reward: math-verify worker failed (%s); grading this answer as incorrect", exc)
        return Verdict(False, "error")
    if verdict.status == "ok":
        _CACHE.put(key, verdict)
    return verdict
