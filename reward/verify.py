"""Time-bounded math-verify: persistent worker processes with a hard deadline, usable from any thread
and inside a running asyncio loop (where math-verify's own signal-based timeout cannot work).

The timeout bounds a whole call once its worker has started: waiting for a free worker counts against
it, and a call that passes its deadline (waiting or verifying) gets "not equivalent" with status
"timeout"; a worker past its deadline is killed (SIGKILL, reaped) and a replacement starts at once.
Workers start on demand, one per concurrent call, up to the pool size, so a caller with k threads gets
min(k, pool size) workers. Workers read their requests from a pipe and exit when it closes, so none
outlives the pool. Configuration: `NPR_REWARD_TIMEOUT_S` (default 5, finite, at most 3600),
`NPR_REWARD_WORKERS` (pool size, default the CPUs this process may use, at most 8),
`NPR_REWARD_START_TIMEOUT_S` (worker start, default 120), `NPR_REWARD_WORKER_MEMORY_MB` (address-space
limit per worker, default none); a `timeout_s` argument wins.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
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
MAX_TIMEOUT_S = 3600.0  # "no timeout" is refused: a reward must never hang a rollout
MAX_DEFAULT_WORKERS = 8
_GRACE_S = 0.2  # the worker's own timer fires this much before the hard deadline (capped at a quarter)


def _env_number(name: str, default: float, kind: type = float) -> float:
    """A number from environment variable `name` (blank or unset: `default`). Raises ValueError naming it."""
    raw = os.environ.get(name, "")
    try:
        return kind(raw) if raw.strip() else default
    except ValueError:
        raise ValueError(f"{name} must be {'an integer' if kind is int else 'a number'}, got {raw!r}; "
                         f"unset it for the default {default}") from None


def timeout_from_env(timeout_s: float | None = None) -> float:
    """The verification timeout: the argument, else NPR_REWARD_TIMEOUT_S, else 5 s.

    Raises ValueError naming the setting unless 0 < timeout <= MAX_TIMEOUT_S (inf and nan included).
    """
    shown = f"timeout_s={timeout_s!r}"
    if timeout_s is None:
        timeout_s = _env_number("NPR_REWARD_TIMEOUT_S", DEFAULT_TIMEOUT_S)
        shown = f"NPR_REWARD_TIMEOUT_S={os.environ.get('NPR_REWARD_TIMEOUT_S')!r}"
    try:
        value = float(timeout_s)
    except (TypeError, ValueError):
        value = math.nan
    if not 0 < value <= MAX_TIMEOUT_S:
        raise ValueError(f"{shown}: the reward verification timeout must be a number of seconds in "
                         f"(0, {MAX_TIMEOUT_S:g}] (a reward must never hang, so there is no 'no timeout'); "
                         f"the default is {DEFAULT_TIMEOUT_S:g}")
    return value


def default_num_workers() -> int:
    """NPR_REWARD_WORKERS, else the CPUs this process may use, at most MAX_DEFAULT_WORKERS."""
    num = int(_env_number("NPR_REWARD_WORKERS", 0, int))
    if num:
        return num
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(MAX_DEFAULT_WORKERS, cpus))


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

    @property
    def died_before_reply(self) -> bool:
        """The process has exited and sent nothing for the current request."""
        return self.proc.poll() is not None and not self.buffer

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
    """Up to `max_workers` worker processes shared by all threads of this process, started on demand.
    `command` starts one worker (default: this interpreter on `_verify_worker.py`)."""

    def __init__(self, max_workers: int | None = None, start_timeout_s: float | None = None,
                 command: list[str] | None = None):
        if max_workers is None:
            max_workers = default_num_workers()
        if max_workers < 1:
            raise ValueError(f"max_workers must be >= 1 (NPR_REWARD_WORKERS), got {max_workers}")
        self.max_workers = max_workers
        self.command = list(command or [sys.executable, "-u", WORKER_SCRIPT])
        self.start_timeout_s = start_timeout_s or _env_number("NPR_REWARD_START_TIMEOUT_S", 120.0)
        self.pid = os.getpid()
        self._idle: list[_Worker] = []
        self._num_workers = 0
        self._cond = threading.Condition()
        self._closed = False
        self.num_timeouts = 0
        self.num_restarts = 0
        self.num_busy = 0  # calls whose deadline passed while they waited for a free worker

    def verify(self, pairs: list[tuple[str, str]], timeout_s: float) -> Verdict:
        """True when any (gold, pred) pair is equivalent. Returns within `timeout_s` of waiting for a free
        worker and verifying; waiting for a worker that is still starting (a new or replacement process,
        bounded by start_timeout_s) does not count.

        Raises WorkerError when no worker can be started. Any exception gives the worker back (killed,
        since its pipe may hold a half-written request), so the pool never loses a slot.
        """
        deadline = time.monotonic() + timeout_s
        worker = self._acquire(deadline)
        remaining = deadline - time.monotonic()
        if worker is not None and remaining < min(_GRACE_S, timeout_s / 4):
            self._release(worker)  # too little time left to verify: no point in killing a worker
            worker = None
        if worker is None:
            with self._cond:
                self.num_busy += 1
            return Verdict(False, "timeout")
        for attempt in (1, 2):
            try:
                worker.wait_ready(self.start_timeout_s)  # a worker's start does not count against the timeout
                reply = worker.request(pairs, remaining)
                break
            except BaseException as exc:
                self._discard(worker)
                if attempt == 1 and isinstance(exc, (BrokenPipeError, WorkerError)) and worker.died_before_reply:
                    # the worker had died before it read this request (e.g. killed while idle): nothing was
                    # verified, so one fresh worker may try, within the same deadline
                    worker = self._acquire(deadline)
                    if worker is not None:
                        continue
                if isinstance(exc, (WorkerError, OSError, ValueError)):
                    raise WorkerError(str(exc)) from exc
                raise
        if reply is None:  # hard deadline: the worker is stuck (e.g. in C code); kill it
            self.num_timeouts += 1
            self._discard(worker, replace=True)
            return Verdict(False, "timeout")
        self._release(worker)
        if "ok" in reply:
            return Verdict(bool(reply["ok"]))
        return Verdict(False, "timeout" if reply.get("timeout") else "error")

    def _acquire(self, deadline: float) -> _Worker | None:
        """An idle worker, else a new one while fewer than max_workers exist, else wait; None at the deadline."""
        with self._cond:
            while not self._idle and self._num_workers >= self.max_workers:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
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
    def num_free(self) -> int:
        """Slots not held by a call: idle workers plus workers that may still be started."""
        with self._cond:
            return self.max_workers - (self._num_workers - len(self._idle))

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
    ValueError for a bad setting (timeout, pool size).
    """
    timeout_s = timeout_from_env(timeout_s)
    key = tuple(pairs)
    cached = _CACHE.get(key)
    if cached is not None:
        return cached
    pool = get_pool()
    try:
        verdict = pool.verify([list(p) for p in pairs], timeout_s)
    except Exception as exc:  # noqa: BLE001 - never raise into a rollout; the pool already freed the slot
        logger.error("reward: math-verify worker failed (%r); grading this answer as incorrect", exc)
        return Verdict(False, "error")
    if verdict.status == "ok":
        _CACHE.put(key, verdict)
    return verdict
