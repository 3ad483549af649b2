"""Fixtures shared by the command tests."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image


@pytest.fixture
def photos(tmp_path):
    """A folder of class folders: ``data/{a,b}/{0,1}.png``, 40 x 50 px random RGB photos."""
    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 255, (40, 50, 3), np.uint8)).save(root / cls / f"{i}.png")
    return root
