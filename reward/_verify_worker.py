"""Worker process of `reward.verify`: math-verify parse/verify on (gold, pred) pairs, one JSON line per
request. Run as a script (imports only math_verify, never `reward`), so it starts the same in any host.

Protocol, one line each way: request {"pairs": [[gold, pred], ...], "timeout": s} ->
reply {"ok": bool} | {"timeout": true} | {"error": str}. The first line it writes is {"ready": pid}
(or {"error": ...} when math_verify cannot be imported). It exits at end of input. The parent enforces
the hard deadline (it kills this process); the interval timer here only lets Python-level work stop
early without a restart.
"""

import json
import os
import signal
import sys


class _Deadline(BaseException):  # BaseException: math-verify swallows Exception
    pass


def _on_alarm(signum, frame):
    raise _Deadline()


def _limit_memory() -> None:
    limit_mb = int(os.environ.get("NPR_REWARD_WORKER_MEMORY_MB", "0") or 0)
    if limit_mb > 0:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (limit_mb << 20, limit_mb << 20))


def main() -> int:
    out = os.fdopen(os.dup(1), "w", buffering=1)  # the protocol channel
    os.dup2(2, 1)  # anything a library prints goes to stderr, never into the protocol
    try:
        import logging

        logging.getLogger("math_verify").setLevel(logging.CRITICAL)
        from math_verify import parse, verify

        _limit_memory()
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which decides
        out.write(json.dumps({"error": f"worker start failed: {exc!r}"}) + "\n")
        return 1

    def grade(pairs):
        for gold, pred in pairs:
            gold_parsed = parse("$" + gold + "$", parsing_timeout=None)
            pred_parsed = parse("$" + pred + "$", parsing_timeout=None)
            if gold_parsed and pred_parsed and verify(gold_parsed, pred_parsed, timeout_seconds=None,
                                                      allow_set_relation_comp=True):
                return True
        return False

    def run(request):
        try:
            try:
                signal.setitimer(signal.ITIMER_REAL, max(0.01, float(request.get("timeout", 5.0))))
                ok = grade(request["pairs"])
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            return {"ok": bool(ok)}
        except _Deadline:
            return {"timeout": True}
        except Exception as exc:  # noqa: BLE001 - a broken expression is "not equivalent", reported
            return {"error": repr(exc)[:300]}

    signal.signal(signal.SIGALRM, _on_alarm)
    out.write(json.dumps({"ready": os.getpid()}) + "\n")
    for line in sys.stdin:
        try:
            request = json.loads(line)
        except ValueError:
            reply = {"error": "bad request"}
        else:
            reply = run(request)
        out.write(json.dumps(reply) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
