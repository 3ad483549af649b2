#!/usr/bin/env bash
# The GPU check of vitjax (issue #8): parity with timm in every precision mode, and speed rows
# of vitjax and PyTorch at B = 256, 64, 8 in float32-exact, TF32 and bf16, within ~8 minutes on
# one H200. Runs from the working tree (no install); needs jax with CUDA, flax, torch, timm.
#
#   benchmarks/gpu.sh                  # -> $OUT/results-gpu.json if $OUT is set, else benchmarks/results-gpu.json
#   benchmarks/gpu.sh --dry-run        # every code path with tiny models, on a CPU in 1-2 minutes
#                                      #   -> $OUT/results-gpu-dry-run.json, else in $TMPDIR or /tmp
#   VITJAX_GPU_DRY_RUN=1 benchmarks/gpu.sh
#   benchmarks/gpu.sh --budget 300     # seconds for all phases (default 440; items that do not fit are skipped)
#
# Details: benchmarks/gpu.py and benchmarks/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
dry=0
for a in "$@"; do [[ "$a" == "--dry-run" ]] && dry=1; done
[[ "${VITJAX_GPU_DRY_RUN:-}" =~ ^(1|true|yes)$ ]] && dry=1
if [[ $dry == 0 ]] && command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader || true
fi
exec "$PY" -m benchmarks.gpu "$@"
