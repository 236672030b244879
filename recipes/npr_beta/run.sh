#!/usr/bin/env bash
# NPR Stage 2 (parallel SFT) through verl's own SFT trainer. Paths and cluster size only.
#   MODEL=/path/to/prepared TRAIN=samples/sft.parquet GPUS=8 bash recipes/npr_beta/run.sh
#   CONFIG=tiny_cpu MODEL=/tmp/tiny TRAIN=... bash recipes/npr_beta/run.sh      # CPU smoke run
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CONFIG="${CONFIG:-npr_beta}"
GPUS="${GPUS:-8}"
if [[ "$CONFIG" == tiny_cpu ]]; then
  export VERL_PLATFORM=cpu
  GPUS=1
fi
exec torchrun --standalone --nnodes=1 --nproc-per-node="$GPUS" -m verl.trainer.sft_trainer \
  --config-path "$HERE" --config-name "$CONFIG" \
  model.path="${MODEL:?set MODEL}" data.train_files="${TRAIN:?set TRAIN}" \
  trainer.default_local_dir="${OUT:-checkpoints/npr_beta}" \
  "$@"
