"""Random checkpoints in Google's ``.npz`` layout, for tests, benchmarks and demos.

Weights are drawn at a realistic scale (activations stay O(1) through depth,
attention logits have a standard deviation of about ``attention_peak`` so the
softmax is peaked as in trained models), which makes parity tests meaningful:
near-uniform attention would hide errors.

From the command line (offline, no download)::

    vitjax-synthetic --variant ViT-B_16 --out vit-b16-random.npz
    vitjax-visualize --ckpt vit-b16-random.npz

It prints the file it wrote; bad arguments exit with status 2 and one line on stderr.
"""

from __future__ import annotations

import os
import zipfile
from typing import Dict

import numpy as np

from vitjax.checkpoints.load import expected_shapes
from vitjax.checkpoints.npz import RANDOM_WEIGHTS_COMMENT
from vitjax.model.config import ViTConfig
from vitjax.model.vit import ViT

__all__ = ["random_checkpoint", "save_npz"]


def random_checkpoint(config: ViTConfig, *, seed: int = 0, attention_peak: float = 2.0) -> Dict[str, np.ndarray]:
    """Random float32 arrays for every key of ``config``'s checkpoint.

    Args:
      config: the architecture (keys and shapes follow :class:`vitjax.ViT`,
        which mirrors Google's files).
      seed: NumPy seed.
      attention_peak: target standard deviation of the attention logits.

    Returns:
      ``{"Transformer/encoderblock_0/...": ndarray}`` flat, ``/``-joined.
    """
    rng = np.random.default_rng(seed)
    d = config.hidden_size
    out: Dict[str, np.ndarray] = {}
    for key, shape in expected_shapes(ViT(config)).items():
        leaf = key.rsplit("/", 1)[-1]
        parent = key.rsplit("/", 2)[-2] if key.count("/") else ""
        if leaf == "scale" and parent == "gn3":
            # The last GroupNorm of each ResNet unit is zero-initialised in BiT/ViT
            # hybrids and stays small after training; with O(1) scales a random
            # 16-unit ResNet is chaotic (float32 rounding grows ~1000x through it).
            a = 0.2 + 0.05 * rng.standard_normal(shape)
        elif leaf == "scale":
            a = 1.0 + 0.1 * rng.standard_normal(shape)
        elif leaf == "bias":
            a = 0.05 * rng.standard_normal(shape)
        elif leaf == "cls" or leaf == "pos_embedding":
            a = 0.1 * rng.standard_normal(shape)
        elif parent in ("query", "key"):
            a = rng.standard_normal(shape) * np.sqrt(attention_peak / d)
        elif leaf == "kernel" and parent.startswith(("conv", "conv_")):
            a = rng.standard_normal(shape)  # weight-standardised at use time
        elif leaf == "kernel":
            fan_in = int(np.prod(shape[:-1])) if parent != "out" else int(shape[0] * shape[1])
            a = rng.standard_normal(shape) / np.sqrt(fan_in)
        else:
            a = 0.1 * rng.standard_normal(shape)
        out[key] = a.astype(np.float32)
    return out


def save_npz(flat: Dict[str, np.ndarray], path: os.PathLike) -> str:
    """Writes ``flat`` as an uncompressed ``.npz`` atomically (temp file beside it, then rename), marked as random.

    The zip archive's comment says the weights are random
    (:data:`vitjax.checkpoints.npz.RANDOM_WEIGHTS_COMMENT`): :func:`vitjax.load_checkpoint`
    then returns a config with ``random_weights=True``, so figures and tables can say so. A
    comment is not a member: ``np.load`` and timm's ``.npz`` loader read the file as before.

    Returns the path as a string. A failed write removes the temp file and leaves ``path`` as it was.
    """
    path = os.fspath(path)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **flat)
        with zipfile.ZipFile(tmp, "a") as zf:
            zf.comment = RANDOM_WEIGHTS_COMMENT + b" (vitjax.checkpoints.synthetic); predictions mean nothing"
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except FileNotFoundError:
            pass
        raise
    return path
