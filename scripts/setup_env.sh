#!/usr/bin/env bash
# Create or update .venv: the pinned test environment (torch 2.14.1, verl 0.9.1 and SGLang 0.5.23
# together, from requirements/test.txt) plus this package, editable, with its [dev] extra.
# Idempotent: a stamp holding a hash of the inputs skips the work when nothing changed.
#
# Usage: bash scripts/setup_env.sh [--clean]     --clean: delete .venv and build it anew
# Environment: NPR_VENV (default <repo>/.venv), NPR_PYTHON (default python3.11, else python3).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${NPR_VENV:-$ROOT/.venv}"
STAMP="$VENV/.npr-test-env"
LOCK="$ROOT/requirements/test.txt"

if [ "${1:-}" = "--clean" ]; then
    rm -rf "$VENV"
elif [ $# -gt 0 ]; then
    echo "usage: bash scripts/setup_env.sh [--clean]" >&2
    exit 2
fi

pick_python() {
    local candidate
    for candidate in "${NPR_PYTHON:-}" python3.11 python3 python; do
        [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1 && { echo "$candidate"; return; }
    done
    echo "setup_env: no Python found; install Python 3.11 or set NPR_PYTHON" >&2
    exit 1
}

# What the environment is built from; a change to any of these rebuilds it.
want_hash() {
    cat "$LOCK" "$ROOT/pyproject.toml" "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1
}

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(want_hash)" ] && "$VENV/bin/python" -c "import npr" 2>/dev/null; then
    echo "setup_env: $VENV is up to date"
    exit 0
fi

start=$SECONDS
if [ ! -x "$VENV/bin/python" ]; then
    PYTHON="$(pick_python)"
    echo "setup_env: creating $VENV with $("$PYTHON" --version 2>&1)"
    "$PYTHON" -m venv "$VENV"
fi
version="$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [ "$version" != "3.11" ]; then
    # requirements/test.txt was locked and tested on 3.11 (SGLang 0.5.23 has no 3.10 wheel,
    # verl 0.9.1 wants <3.13).
    echo "setup_env: $VENV has Python $version but the pinned environment needs 3.11;" \
         "install python3.11 (or point NPR_PYTHON at it) and run: bash scripts/setup_env.sh --clean" >&2
    exit 1
fi

rm -f "$STAMP"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check install --quiet)
echo "setup_env: installing requirements/test.txt (no dependency resolution: the pins are the environment)"
# pip warns about lines of local index folders that are absent on this machine: noise, not errors.
"${PIP[@]}" --no-deps -r "$LOCK" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
echo "setup_env: installing native-parallel-reasoner (editable, [dev])"
"${PIP[@]}" --no-deps -e "$ROOT[dev]" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
# The lock must cover our own requirements: fail here rather than halfway through the tests.
"$VENV/bin/python" - <<'PY'
import sys
from importlib import metadata

from packaging.requirements import Requirement

unmet = []
for line in metadata.requires("native-parallel-reasoner") or []:
    req = Requirement(line)
    if req.marker and not any(req.marker.evaluate({"extra": extra}) for extra in ("", "dev")):
        continue  # an extra other than [dev]
    try:
        version = metadata.version(req.name)
    except metadata.PackageNotFoundError:
        version = None
    if version is None or not req.specifier.contains(version, prereleases=True):
        unmet.append(f"{req} (installed: {version})")
if unmet:
    sys.exit("setup_env: requirements/test.txt does not satisfy pyproject.toml: " + "; ".join(unmet)
             + ". Add them to requirements/*.txt and run scripts/lock_requirements.sh.")
PY
want_hash > "$STAMP"
echo "setup_env: $VENV ready in $((SECONDS - start))s"
