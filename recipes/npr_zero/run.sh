#!/usr/bin/env bash
# NPR Stage 1 (NPR-Zero). Paths and cluster size only; every hyper-parameter lives in the YAML.
#   MODEL=Qwen/Qwen3-4B-Instruct-2507 TRAIN=orz.parquet VAL=aime25.parquet NODES=1 GPUS=8 bash recipes/npr_zero/run.sh
#   CONFIG=tiny_cpu MODEL=/tmp/tiny TRAIN=... bash recipes/npr_zero/run.sh      # CPU variant
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec bash "$HERE/../main_ppo.sh" "$HERE" npr_zero "$@"
