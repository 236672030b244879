#!/usr/bin/env bash
# Run the test suite in the pinned environment (.venv, built or refreshed by setup_env.sh), against
# the real verl and SGLang packages. Extra arguments go to pytest (e.g. tests/npr -k layout).
# Closes with one line "N passed, N failed, N skipped"; exits non-zero on any failure or error.
#
# NPR_REQUIRE_HOSTS=1 (the default here) turns "host not installed" skips into failures, so the host
# tests cannot pass by skipping; set NPR_REQUIRE_HOSTS=0 to run in an environment without them.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${NPR_VENV:-$ROOT/.venv}"
export NPR_VENV="$VENV"
export NPR_REQUIRE_HOSTS="${NPR_REQUIRE_HOSTS:-1}"

bash "$ROOT/scripts/setup_env.sh"

cd "$ROOT"
REPORT_DIR="$(mktemp -d "${TMPDIR:-/tmp}/npr-test.XXXXXX")"
trap 'rm -rf "$REPORT_DIR"' EXIT
JUNIT="$REPORT_DIR/junit.xml"

set +e
"$VENV/bin/python" -m pytest -p no:cacheprovider -rfEs --junitxml="$JUNIT" "$@"
status=$?
set -e

# pytest exit codes: 0 all passed, 1 some failed, 2 interrupted, 3 internal error, 4 usage error,
# 5 no tests collected (not a failure of the code, but reported as 0 passed below).
if [ ! -f "$JUNIT" ]; then  # pytest stopped before writing a report (usage or internal error)
    echo "0 passed, 0 failed, 0 skipped"
    exit $(( status == 5 ? 0 : (status == 0 ? 1 : status) ))
fi
summary="$("$VENV/bin/python" - "$JUNIT" <<'EOF'
import sys
import xml.etree.ElementTree as ET

root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
count = lambda key: sum(int(s.get(key, 0)) for s in suites)
tests, failed, skipped = count("tests"), count("failures") + count("errors"), count("skipped")
print(f"{tests - failed - skipped} passed, {failed} failed, {skipped} skipped")
EOF
)"
echo "$summary"
case "$status" in
    0 | 5) exit 0 ;;
    *) exit "$status" ;;
esac
