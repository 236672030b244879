#!/usr/bin/env bash
# NPR Stage 3 (PAPO). Paths and cluster size only; every hyper-parameter lives in npr_rl.yaml.
#   MODEL=/path/to/npr-beta TRAIN=train.parquet VAL=test.parquet NODES=1 GPUS=8 bash recipes/npr_rl/run.sh [overrides...]
#   CONFIG=tiny_cpu MODEL=/tmp/tiny TRAIN=... VAL=... bash recipes/npr_rl/run.sh      # CPU smoke run
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec bash "$HERE/../main_ppo.sh" "$HERE" npr_rl "$@"
