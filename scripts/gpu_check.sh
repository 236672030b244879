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
timeout 240 python3 benchmarks/bench_structured_attention.py --mode kernel --repeats 5 2>&1 | tail -20 | tee "$OUT/structured_attention.log"; cp benchmarks/results/structured_attention.csv "$OUT/" 2>/dev/null

# Not runnable on the lent machine (SGLang cannot be installed there), to run by hand on a GPU that has
# SGLang 0.5.23 (sglang_npr/DESIGN_NOTES.md §6):
#   1. the decode-graph shape: `python benchmarks/bench_sglang_forkjoin.py` on CUDA (drop --device cpu),
#      then read get_server_info()["internal_states"][0]["npr"]: npr_graph_forwards == npr_forwards
#      (every NPR step replayed SGLang's decode graph), forwards == batches;
#   2. the same outputs with and without --disable-cuda-graph (tests/sglang_npr/test_engine_forkjoin.py
#      with CPU_ENGINE_ARGS' device / disable_cuda_graph switched), with NPR_INNER_ATTENTION_BACKEND =
#      flashinfer, triton, fa3;
#   3. tp=2: outputs equal to tp=1 for seeded and unseeded NPR requests, then lift the tp refusal.
