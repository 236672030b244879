#!/usr/bin/env bash
# verl's main_ppo on one recipe folder's config, for the recipes' run.sh (npr_zero, npr_rl): paths and
# cluster size from the environment, every hyper-parameter in the recipe's YAML.
#   bash recipes/main_ppo.sh RECIPE_DIR DEFAULT_CONFIG [overrides...]
# Environment: MODEL and TRAIN (required), VAL (default TRAIN), NODES (1), GPUS (8; 1 for tiny_cpu),
# OUT (checkpoints/<recipe>), CONFIG (DEFAULT_CONFIG; tiny_cpu = the CPU variant).
set -euo pipefail
HERE="$1"
CONFIG="${CONFIG:-$2}"
shift 2
if [[ "$CONFIG" == tiny_cpu ]]; then
  export VERL_PLATFORM=cpu
  unset SGLANG_USE_CPU_ENGINE
  GPUS="${GPUS:-1}"                # one (fake) GPU: the Ray resource the cpu platform reports
fi
exec python -m verl.trainer.main_ppo --config-path "$HERE" --config-name "$CONFIG" \
  actor_rollout_ref.model.path="${MODEL:?set MODEL}" \
  data.train_files="${TRAIN:?set TRAIN}" data.val_files="${VAL:-$TRAIN}" \
  trainer.nnodes="${NODES:-1}" trainer.n_gpus_per_node="${GPUS:-8}" \
  trainer.default_local_dir="${OUT:-checkpoints/$(basename "$HERE")}" \
  "$@"
