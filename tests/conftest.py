"""Shared fixtures: synthetic checkpoints in Google's .npz layout, written by the tests."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")

from support.helpers import EPS32, SAMPLES, rounding_tol  # noqa: E402,F401 (shared by the tests)

from vitjax.checkpoints.synthetic import random_checkpoint, save_npz  # noqa: E402
from vitjax.model.config import get_config  # noqa: E402


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
