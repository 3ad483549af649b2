"""Shared fixtures: synthetic checkpoints in Google's .npz layout, written by the tests."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")

from vitjax.config import get_config  # noqa: E402
from vitjax.synthetic import random_checkpoint, save_npz  # noqa: E402

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "caltech101-samples"


@pytest.fixture(scope="session")
def make_checkpoint(tmp_path_factory):
    """``make_checkpoint(variant, **config_overrides) -> path`` of a random Google-layout .npz.

    Files are cached per session, so each variant is written once.
    """
    root = tmp_path_factory.mktemp("ckpt")
    cache = {}

    def make(variant: str = "testing", seed: int = 0, **overrides) -> Path:
        key = (variant, seed, tuple(sorted(overrides.items())))
        if key not in cache:
            config = get_config(variant, **overrides)
            name = f"{variant}-{seed}-{abs(hash(key)) % 10**8}.npz".replace("+", "_")
            cache[key] = Path(save_npz(random_checkpoint(config, seed=seed), root / name))
        return cache[key]

    return make


@pytest.fixture(scope="session")
def tiny_checkpoint(make_checkpoint) -> Path:
    return make_checkpoint("testing")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


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
