#!/usr/bin/env python
"""Throughput, memory and start-up benchmark of vitjax against the PyTorch practice.

    python scripts/benchmark.py          # ViT-B/16, batches 1, 8, 32 -> benchmarks/results-<platform>.json
    python scripts/benchmark.py --help

All logic lives in :mod:`vitjax.benchmark`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vitjax.benchmark import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
