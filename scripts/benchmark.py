#!/usr/bin/env python
"""Throughput, memory and start-up of vitjax against PyTorch, on this machine's CPU (or device).

    python scripts/benchmark.py             # ViT-B/16, batches 1, 8, 32 -> benchmarks/results-<platform>.json
    python scripts/benchmark.py --help
    benchmarks/gpu.sh [--dry-run]           # the GPU precision and speed check

The harness lives in benchmarks/ (never in the vitjax package); see benchmarks/README.md.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
