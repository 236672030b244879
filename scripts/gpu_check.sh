#!/usr/bin/env bash
# One prepared GPU check (for a machine lent for a few minutes): GPU tests, then the decoder benchmark on a
# Qwen3-4B-shaped random model. Writes logs and CSV rows under ${OUT:-out}/.
# The device copy has no .git: run it as  NPR_GIT_SHA=<sha> OUT=$OUT bash scripts/gpu_check.sh
set -uo pipefail
OUT=${OUT:-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/device.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/device.txt"
CUDA_LAUNCH_BLOCKING=1 timeout 240 python3 -m pytest -q -p no:cacheprovider tests/npr/test_gpu.py 2>&1 | tail -30 | tee "$OUT/gpu_tests.log"
timeout 420 python3 benchmarks/bench_decoder.py --model qwen3-4b-shape --prefix 2048 --widths ${WIDTHS:-1 2 4 8} \
  --branch-len 256 --repeats ${REPEATS:-2} --hf-tokens 64 --out "$OUT/decoder.csv" 2>&1 | tee "$OUT/bench.log"
