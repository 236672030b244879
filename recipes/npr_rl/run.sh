#!/usr/bin/env bash
# NPR Stage 3 (PAPO). Paths and cluster size only; every hyper-parameter lives in npr_rl.yaml.
#   MODEL=/path/to/npr-beta TRAIN=train.parquet VAL=test.parquet NODES=1 GPUS=8 bash recipes/npr_rl/run.sh [overrides...]
#   CONFIG=tiny_cpu MODEL=/tmp/tiny TRAIN=... VAL=... bash recipes/npr_rl/run.sh      # CPU smoke run
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CONFIG="${CONFIG:-npr_rl}"
if [[ "$CONFIG" == tiny_cpu ]]; then
  export VERL_PLATFORM=cpu
  unset SGLANG_USE_CPU_ENGINE
  GPUS="${GPUS:-1}"                # one (fake) GPU: the Ray resource the cpu platform reports
fi
exec python -m verl.trainer.main_ppo --config-path "$HERE" --config-name "$CONFIG" \
  actor_rollout_ref.model.path="${MODEL:?set MODEL}" \
  data.train_files="${TRAIN:?set TRAIN}" data.val_files="${VAL:-$TRAIN}" \
  trainer.nnodes="${NODES:-1}" trainer.n_gpus_per_node="${GPUS:-8}" \
  trainer.default_local_dir="${OUT:-checkpoints/npr_rl}" \
  "$@"
