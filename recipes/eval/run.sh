#!/usr/bin/env bash
# Usage: bash recipes/eval/run.sh [OVERLAY.yaml] [key=value ...]
#   e.g. bash recipes/eval/run.sh recipes/eval/sglang.yaml model=/ckpt/npr-4b 'benchmarks=[{name: aime25, source: data/aime25}]'
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CONFIG="$HERE/eval.yaml"
if [ $# -gt 0 ] && [[ "$1" == *.yaml ]]; then CONFIG="$1"; shift; fi
exec npr eval --config "$CONFIG" "$@"
