#!/usr/bin/env bash
# Run `npr demo`: the whole NPR pipeline in miniature on a CPU (Stage 2 and Stage 3 through verl's
# actor, evaluation with the fork-join engine). It needs verl, so .venv is the pinned test environment
# of scripts/setup_env.sh (built on first use, about 2.5 min on 2 cores; a no-op once up to date).
# Arguments go to `npr demo` (--fast: test-suite size; --quick: the consistency check alone).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${NPR_VENV:-$ROOT/.venv}"

if ! "$VENV/bin/python" -c "import torch, verl, npr.cli" >/dev/null 2>&1; then
    echo "demo: building the pinned environment in $VENV (scripts/setup_env.sh)" >&2
    NPR_VENV="$VENV" bash "$ROOT/scripts/setup_env.sh"
fi

cd "$ROOT"
exec "$VENV/bin/npr" demo "$@"
