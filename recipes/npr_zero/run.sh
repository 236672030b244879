#!/usr/bin/env bash
# NPR Stage 1 (NPR-Zero). Paths and cluster size only; every hyper-parameter lives in the YAML.
#   MODEL=Qwen/Qwen3-4B-Instruct-2507 TRAIN=orz.parquet VAL=aime25.parquet NODES=1 GPUS=8 bash recipes/npr_zero/run.sh
#   CONFIG=tiny_cpu MODEL=/tmp/tiny TRAIN=... bash recipes/npr_zero/run.sh      # CPU variant
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CONFIG="${CONFIG:-npr_zero}"
if [[ "$CONFIG" == tiny_cpu ]]; then
  export VERL_PLATFORM=cpu
  unset SGLANG_USE_CPU_ENGINE
fi
exec python -m verl.trainer.main_ppo --config-path "$HERE" --config-name "$CONFIG" \
  actor_rollout_ref.model.path="${MODEL:?set MODEL}" \
  data.train_files="${TRAIN:?set TRAIN}" data.val_files="${VAL:-$TRAIN}" \
  trainer.nnodes="${NODES:-1}" trainer.n_gpus_per_node="${GPUS:-8}" \
  trainer.default_local_dir="${OUT:-checkpoints/npr_zero}" \
  "$@"
