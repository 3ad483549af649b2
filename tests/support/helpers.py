"""What the tests share besides fixtures: the sample photos' folder and float32 rounding bounds."""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: ../shared/data/caltech101-samples beside the checkout (25 real Caltech101 photos; never committed).
SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "data" / "caltech101-samples"

EPS32 = float(np.finfo(np.float32).eps)  # 2**-23, the spacing of float32 numbers at 1.0


def rounding_tol(scale: float, steps: int, fan_in: int = 1) -> float:
    """Largest float32 difference expected between two correct evaluations of one computation.

    Two programs that compute the same float32 function (jitted vs not, fused differently, another
    CPU's vector width, another library) differ only by the order of roundings. Each of ``steps``
    sequential stages (a dot product or sum of ``fan_in`` terms, a normalisation, a softmax) adds a
    relative error of about ``sqrt(fan_in) * eps`` (rounding errors of a sum grow like a random walk);
    the stages add up, relative to ``scale``, the magnitude of the values compared. A real fault (a
    wrong GELU, a transposed kernel, a missed residual) moves values by 1e-3 or more of ``scale``.
    """
    return float(scale) * steps * float(np.sqrt(fan_in)) * EPS32
