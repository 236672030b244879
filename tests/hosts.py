"""Helpers for tests of the real hosts (verl, SGLang): run Python in a fresh interpreter, and skip a
test module whose host is absent — or fail it when NPR_REQUIRE_HOSTS=1 (scripts/test.sh sets it), so
host tests never skip silently in CI, where both hosts are installed."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys

import pytest

# host -> the import that proves it usable on this machine
HOST_IMPORTS = {"verl": "import verl", "sglang": "import sglang.srt.plugins"}


def make_env(overrides: dict[str, str | None] | None = None) -> dict[str, str]:
    """os.environ with `overrides` applied; a value of None removes the variable."""
    env = dict(os.environ)
    for key, value in (overrides or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run_python(code: str, env: dict[str, str | None] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `code` with this interpreter in a fresh process, with `env` overrides (see make_env)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          env=make_env(env), stdin=subprocess.DEVNULL)


def run_json(code: str, env: dict[str, str | None] | None = None, timeout: float = 300):
    """Run `code` in a fresh process and parse the last stdout line that is a JSON object."""
    proc = run_python(code, env=env, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 0 and lines, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return json.loads(lines[-1])


@functools.lru_cache(maxsize=None)
def host_unusable_reason(host: str) -> str | None:
    """None when `host` imports in a fresh process, else why not."""
    proc = run_python(HOST_IMPORTS[host] + "\n", env={"VERL_USE_EXTERNAL_PLUGINS": "none"})
    if proc.returncode == 0:
        return None
    tail = proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
    return f"{host} is not importable: {tail[0]}"


def require_host(host: str) -> None:
    """Call at module level: skip the module when `host` is unusable, fail it under NPR_REQUIRE_HOSTS=1."""
    reason = host_unusable_reason(host)
    if reason is None:
        return
    if os.environ.get("NPR_REQUIRE_HOSTS") == "1":
        pytest.fail(f"NPR_REQUIRE_HOSTS=1 but {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)
