#!/usr/bin/env bash
# Run `npr demo` (the embedded default end to end on a tiny in-memory model). Needs only torch and
# this package: when .venv is missing it builds a light one (CPU torch, no verl/SGLang) in about a
# minute; a full test environment from setup_env.sh serves as well. Arguments go to `npr demo`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${NPR_VENV:-$ROOT/.venv}"

if ! "$VENV/bin/python" -c "import torch, npr.cli" >/dev/null 2>&1; then
    if [ ! -x "$VENV/bin/python" ]; then
        PYTHON="${NPR_PYTHON:-$(command -v python3.11 || command -v python3)}"
        echo "demo: creating $VENV with $("$PYTHON" --version 2>&1)" >&2
        "$PYTHON" -m venv "$VENV"
    fi
    PIP=("$VENV/bin/python" -m pip --disable-pip-version-check install --quiet)
    if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
        echo "demo: installing torch (requirements/demo.txt)" >&2
        "${PIP[@]}" -r "$ROOT/requirements/demo.txt" 2> >(grep -v "is ignored: it is neither" >&2)
    fi
    echo "demo: installing native-parallel-reasoner (editable)" >&2
    "${PIP[@]}" -e "$ROOT" 2> >(grep -v "is ignored: it is neither" >&2)
fi

exec "$VENV/bin/npr" demo "$@"
