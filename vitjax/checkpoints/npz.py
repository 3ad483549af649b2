"""Google's ``.npz`` checkpoints, read without ever unpickling anything.

``np.load(path, allow_pickle=False)`` of a zip of ``.npy`` members with flat
``/``-joined keys (``Transformer/encoderblock_0/LayerNorm_0/scale``...), as
written by ``vit_jax`` and big_vision. The tree is checked and renamed by
:mod:`vitjax.checkpoints.load`.
"""

from __future__ import annotations

import os
import zipfile
from typing import Dict, Union

import numpy as np

from vitjax.errors import CheckpointError, require_file

__all__ = ["load_npz"]

PathLike = Union[str, os.PathLike]
Flat = Dict[str, np.ndarray]


def load_npz(path: PathLike) -> Flat:
    """Reads every array of an ``.npz`` archive, never unpickling anything.

    Args:
      path: the file.

    Returns:
      ``{"Transformer/encoderblock_0/LayerNorm_0/scale": ndarray, ...}``, the
      flat ``/``-joined keys of the file; arrays as stored (numeric dtypes).

    Raises:
      CheckpointError: missing, empty, truncated, not a zip/npz archive, a
        PyTorch file, or any member that is not a numeric ``.npy`` array
        (object arrays would need pickle and are refused).
    """
    path = require_file(path, "an .npz checkpoint")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path}: not an .npz archive (no zip directory found; truncated or another format)"
        )
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise CheckpointError(f"{path}: unreadable zip archive ({e})") from None
    if any(n.endswith(".pkl") for n in names):
        raise CheckpointError(
            f"{path}: looks like a PyTorch checkpoint (contains a pickle); "
            "vitjax reads Google's .npz ViT checkpoints"
        )
    not_npy = [n for n in names if not n.endswith(".npy")]
    if not_npy:
        raise CheckpointError(f"{path}: member {not_npy[0]!r} is not a .npy array; not an .npz checkpoint")
    out: Flat = {}
    try:
        with np.load(path, allow_pickle=False) as npz:
            for key in npz.files:
                arr = npz[key]
                if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "fiub":
                    kind = getattr(arr, "dtype", type(arr).__name__)
                    raise CheckpointError(f"{path}: key {key!r} holds {kind} data, not numbers")
                out[key] = arr
    except CheckpointError:
        raise
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise CheckpointError(
                f"{path}: key {key!r} is an object array, which needs pickle; refused"
            ) from None
        raise CheckpointError(f"{path}: unreadable array {key!r} ({e})") from None
    except (zipfile.BadZipFile, OSError, EOFError, KeyError) as e:
        raise CheckpointError(f"{path}: truncated or corrupt archive ({type(e).__name__}: {e})") from None
    if not out:
        raise CheckpointError(f"{path}: the archive holds no arrays")
    return out
