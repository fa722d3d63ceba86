#!/usr/bin/env bash
# Stage 1 on a GPU: loader throughput and training samples/s with the loader feeding the model.
# Prepared for the `device` tool (one short run); the device image has torch, lightning, numpy,
# pandas, scikit-learn and xxhash, which is all the embedded-store path needs (no WebSocket run).
# Usage there: bash benchmarks/gpu_check.sh   (writes $OUT/gpu_check.json and gpu_check.log)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/gpu_check_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
  "$PY" -c "import torch, pytorch_lightning as pl; print('torch', torch.__version__, 'lightning', pl.__version__, 'cuda', torch.cuda.is_available())"
  # 2M cells, 2000 pairs, PCA width 243 (the last original's), like the CPU figures in RESULTS.md.
  # CELLS / ACCELERATOR / TRAIN_BATCHES override for a dry run on a CPU machine.
  timeout 480 "$PY" benchmarks/bench_loader.py --cells "${CELLS:-2000000}" --pairs 2000 --pca-dim 243 \
    --no-ws --workers 0,4 --batch-sizes 8192 --accelerator "${ACCELERATOR:-gpu}" \
    --train-batch-sizes 1024,8192,65536 --train-batches "${TRAIN_BATCHES:-150}" --train-workers 4 \
    --train-precisions "${PRECISIONS:-32-true/highest,32-true/high,bf16-mixed/high}" \
    --workdir /tmp/bench_loader --out "$OUT/gpu_check.json"
} 2>&1 | tee "$OUT/gpu_check.log"
