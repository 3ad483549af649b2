"""Files vitjax writes: one atomic writer, file hashes, and the maps file (msgpack).

:func:`write_atomic` is the one way the package writes a file (figures,
TSV, maps, run metadata): bytes go to a hidden temporary file beside the
target, which is then moved into place, so a reader never sees a partial
file and, unless asked, nobody else's file is replaced.

The maps file is ``flax.serialization.msgpack_serialize`` of one dict::

    {
      "format": "vitjax-maps",
      "version": 1,
      "arrays": {"rollout": [N, gh, gw], "layer": [N, L, gh, gw], ...},   # NumPy arrays
      "metadata": {"images": [...], "original_sizes": [[h, w], ...], ...},  # plain values
    }

Arrays keep their dtype and shape (flax's msgpack extension); metadata holds
only msgpack-native values (str, int, float, bool, None, lists, string-keyed
dicts): tuples become lists, paths become strings, NumPy scalars Python
numbers. :func:`load_maps` reads it back with
``flax.serialization.msgpack_restore``.

What the visualize run stores (``--save-maps``), for N processed images:

* arrays: ``rollout [N, gh, gw]`` (joint map), ``layer [N, L, gh, gw]`` (each
  layer's own map), ``cumulative [N, L, gh, gw]`` (joint map through each
  layer), ``heads [N, H, gh, gw]`` (per-head maps of ``metadata["heads_layer"]``),
  ``token_norms [N, gh, gw]`` (last block's output-token norms, when the model
  provides them), ``topk_indices [N, k]`` int32 and ``topk_probs [N, k]``
  float32 (softmax; k = 0 for a headless model or a zero head); maps in
  [0, 1] on the model's patch grid.
* metadata: ``images`` (paths), ``original_sizes`` (``[height, width]`` each),
  ``grid``, ``image_size``, ``method``, ``options`` (``RolloutOptions.to_dict()``),
  ``precision``, ``checkpoint`` (as given), ``checkpoint_path``,
  ``checkpoint_sha256``, ``topk_labels``, ``head`` and more.
"""


from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Mapping, Union

import numpy as np

__all__ = ["FORMAT", "VERSION", "file_sha256", "load_maps", "save_maps", "write_atomic"]

FORMAT = "vitjax-maps"
VERSION = 1

PathLike = Union[str, os.PathLike]


def _plain(value: Any, where: str) -> Any:
    """A msgpack-native copy of a metadata value (tuples -> lists, paths -> str, NumPy -> Python)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(f"{where}: metadata keys must be strings, got {k!r}")
            out[k] = _plain(v, f"{where}.{k}")
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise ValueError(f"{where}: cannot store a {type(value).__name__} in metadata")


def save_maps(
    path: PathLike,
    arrays: Mapping[str, Any],
    metadata: Mapping[str, Any] | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Writes ``arrays`` and ``metadata`` to ``path`` as one msgpack file, atomically.

    Args:
      path: the file (conventionally ``maps.msgpack``); its folder must exist.
      arrays: name -> array (NumPy or JAX; stored as NumPy with dtype and shape).
      metadata: plain values describing the arrays (see the module docstring).
      overwrite: replace an existing file; otherwise refuse it.

    Returns:
      ``path`` as a :class:`pathlib.Path`.

    Raises:
      ValueError: an array name that is not a string, or metadata that cannot
        be stored.
      FileExistsError: ``path`` exists and ``overwrite`` is False.
      OSError: the folder is missing or not writable.
    """
    from flax.serialization import msgpack_serialize

    path = Path(path)
    stored = {}
    for name, a in arrays.items():
        if not isinstance(name, str):
            raise ValueError(f"array names must be strings, got {name!r}")
        stored[name] = np.asarray(a)
    tree = {
        "format": FORMAT,
        "version": VERSION,
        "arrays": stored,
        "metadata": _plain(dict(metadata or {}), "metadata"),
    }
    data = msgpack_serialize(tree)
    write_atomic(path, data, overwrite=overwrite)
    return path


def load_maps(path: PathLike) -> Dict[str, Any]:
    """Reads a file written by :func:`save_maps`.

    Returns:
      ``{"format": "vitjax-maps", "version": 1, "arrays": {name: np.ndarray},
      "metadata": {...}}``.

    Raises:
      ValueError: the file is missing, unreadable, or not a vitjax maps file
        (one line naming the file).
    """
    from flax.serialization import msgpack_restore

    where = os.fspath(path)
    try:
        with open(where, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ValueError(f"{where}: cannot read maps file ({e.strerror or e})") from None
    try:
        tree = msgpack_restore(data)
    except Exception as e:  # msgpack raises ValueError subclasses, TypeError, StackError...
        detail = str(e) or type(e).__name__
        raise ValueError(f"{where}: not a vitjax maps file (msgpack: {detail})") from None
    if not isinstance(tree, dict) or tree.get("format") != FORMAT:
        raise ValueError(f"{where}: not a vitjax maps file (no format={FORMAT!r} marker)")
    if tree.get("version") != VERSION:
        raise ValueError(f"{where}: maps file version {tree.get('version')!r}; this vitjax reads version {VERSION}")
    if not isinstance(tree.get("arrays"), dict) or not isinstance(tree.get("metadata"), dict):
        raise ValueError(f"{where}: damaged vitjax maps file (no arrays/metadata)")
    return tree


def write_atomic(path: PathLike, data: bytes, *, overwrite: bool = False) -> Path:
    """Writes ``data`` to ``path`` through a temporary file in the same folder.

    The bytes go to a hidden temporary file beside ``path``, which is then
    moved into place (``os.replace`` with ``overwrite``; otherwise a hard link,
    which fails if ``path`` appeared meanwhile), so ``path`` is never a
    partial file and, without ``overwrite``, never someone else's file.

    Raises:
      FileExistsError: ``path`` exists and ``overwrite`` is False.
      OSError: the folder is missing or not writable.
    """
    path = Path(path)
    if not overwrite and os.path.lexists(path):
        raise FileExistsError(f"{path}: exists; not overwritten")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # atomic "create if absent"
            except FileExistsError:
                raise FileExistsError(f"{path}: exists; not overwritten") from None
            except OSError:  # file systems without hard links
                if os.path.lexists(path):
                    raise FileExistsError(f"{path}: exists; not overwritten") from None
                os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.remove(tmp)
    return path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_sha256(path: PathLike, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file (read in 4 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()
