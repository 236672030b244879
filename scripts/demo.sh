#!/usr/bin/env bash
# Run `npr demo`: the whole NPR pipeline in miniature on a CPU (an "instruct" prelude, Stage 1, self-distilled
# Stage 2 and Stage 3 through verl's actor; rollouts, sampling and evaluation with a fork-join engine). It
# needs verl, so .venv is the pinned
# test environment of scripts/setup_env.sh: built on first use (about 2.5 min on 2 cores), updated when
# the requirements or pyproject.toml change, a no-op otherwise.
# Arguments go to `npr demo` (--engine sglang; --fast: test-suite size; --quick: the consistency check alone).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${NPR_VENV:-$ROOT/.venv}"

NPR_VENV="$VENV" bash "$ROOT/scripts/setup_env.sh" >&2

cd "$ROOT"
exec "$VENV/bin/npr" demo "$@"
