"""vitjax's benchmark harness: measurements against timm/PyTorch, and their results.

This folder lives beside the package, never inside it: it imports torch, timm and the tests'
shared timm reference (``tests/reference.py``), and it knows where the repository is. Run it
from a checkout with the repository root on ``sys.path``:

    python scripts/benchmark.py --help      # CPU harness (benchmarks/harness.py)
    benchmarks/gpu.sh [--dry-run]           # GPU precision + speed check (benchmarks/gpu.py)

Importing this package imports neither JAX nor torch (child processes of the PyTorch rows must
not start JAX).
"""
