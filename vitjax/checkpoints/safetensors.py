"""Other checkpoint formats: timm and Hugging Face ViTs stored as ``.safetensors``.

:func:`read_safetensors` reads a file with the ``safetensors`` library (NumPy
framework; nothing is ever unpickled), detects the naming from the keys
(:func:`vitjax.checkpoints.convert.detect`), converts the tensors to vitjax's
canonical Google-layout flat tree (:func:`vitjax.checkpoints.convert.to_canonical`)
and returns the :class:`vitjax.ViTConfig` field values the file's family
implies. Position-embedding resamplers equal to PyTorch's live in
:mod:`vitjax.checkpoints.posemb`.

Family semantics (sources: timm ``vision_transformer.py`` and its
``pretrained_cfg``; transformers ``ViTConfig``, ``Dinov2Config``,
``ViTImageProcessor``, ``BitImageProcessor``):

================================  ====================  =============  ==========  =====================
family                            ``posemb_resize``     LayerNorm eps  GELU        pixel mean / std
================================  ====================  =============  ==========  =====================
timm (any ``VisionTransformer``)  ``"timm"``            1e-6           exact       ImageNet with LayerScale
                                                                                   (DINOv2, DeiT-III), else
                                                                                   (0.5, 0.5) (timm's ViT default)
HF ``ViTModel`` / ``...ForImage``  ``"bicubic"``         1e-12          exact       (0.5, 0.5)
HF ``Dinov2Model``                ``"bicubic"``         1e-6           exact       ImageNet
HF ``Dinov2WithRegistersModel``   ``"timm"`` (it calls  1e-6           exact       ImageNet
                                  the same antialiased
                                  bicubic as timm)
================================  ====================  =============  ==========  =====================

Where the file sits beside the JSON its library writes with it, that JSON
wins: Hugging Face ``config.json`` (``num_attention_heads``,
``layer_norm_eps``, ``hidden_act``; used only when its ``hidden_size`` and
``num_hidden_layers`` match the weights) and ``preprocessor_config.json``
(``image_mean``/``image_std``); timm's ``config.json`` from ``save_for_hf`` /
the Hub (``pretrained_cfg.mean/std``, ``model_args.num_heads``,
``global_pool``; used when its ``num_features`` matches). An unreadable or
non-matching JSON file is ignored.

**Head count.** timm and Hugging Face files do not store it (fused shapes are
``(3D, D)`` whatever the heads). In order: the ``num_heads`` argument, the
file's ``vitjax.num_heads`` metadata, the sidecar JSON, the widths whose
published models break the 64-wide-head rule (1280 ViT-H, 1408 ViT-g,
1664 ViT-G, 1152 SO400M: 16 heads), then ``D / 64`` (every DeiT, DINOv2 and
Google ViT Ti/S/B/L). A wrong count changes the attention maps and the
outputs, so pass ``num_heads`` for anything else.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np

from vitjax.checkpoints.convert import detect, to_canonical
from vitjax.errors import CheckpointError, pickle_refusal, require_file

__all__ = [
    "read_safetensors",
    "load_safetensors",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)
_HEADS_BY_WIDTH = {1152: 16, 1280: 16, 1408: 16, 1664: 16}
_APPROX_GELU = {"gelu_new", "gelu_pytorch_tanh", "gelu_fast", "gelu_python_tanh"}
_MAX_JSON = 4 << 20
Flat = Dict[str, np.ndarray]




def _read_bf16(path: str, key: str) -> np.ndarray:
    """One BF16 tensor, read from the file's header offsets and widened to float32 (NumPy has no bfloat16)."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        entry = json.loads(f.read(n))[key]
        start, end = entry["data_offsets"]
        f.seek(8 + n + start)
        raw = np.frombuffer(f.read(end - start), dtype="<u2")
    return (raw.astype(np.uint32) << 16).view(np.float32).reshape(entry["shape"])


def load_safetensors(path) -> Tuple[Flat, Dict[str, str]]:
    """Every tensor of a ``.safetensors`` file as NumPy, and the file's string metadata.

    Floating tensors (F16, BF16, F32, F64) come back as float32; others as stored.

    Raises:
      CheckpointError: missing, empty or a directory; a PyTorch pickle (the
        message says how to convert it); not a safetensors file; no tensors.
    """
    path = require_file(path, "a .safetensors file")
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"PK" or magic[:1] == b"\x80":  # torch.save's zip archive, or a bare pickle
        raise CheckpointError(pickle_refusal(path))
    from safetensors import SafetensorError, safe_open

    out: Flat = {}
    try:
        with safe_open(path, framework="np") as f:
            meta = dict(f.metadata() or {})
            for key in f.keys():
                if f.get_slice(key).get_dtype() == "BF16":
                    arr = _read_bf16(path, key)
                else:
                    arr = f.get_tensor(key)
                out[key] = arr.astype(np.float32) if arr.dtype.kind == "f" else arr
    except (SafetensorError, OSError, ValueError, KeyError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path}: not a readable .safetensors file ({msg})") from None
    if not out:
        raise CheckpointError(f"{path}: the file holds no tensors")
    return out, meta


def _json(path: Path) -> Optional[dict]:
    try:
        if not path.is_file() or path.stat().st_size > _MAX_JSON:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _triple(v) -> Optional[Tuple[float, float, float]]:
    if isinstance(v, (list, tuple)) and len(v) == 3 and all(isinstance(x, (int, float)) for x in v):
        return tuple(float(x) for x in v)
    return None


def _sidecar(folder: Path, family: str, d: int, layers: int) -> dict:
    """Facts from the JSON its library writes beside the weights, when it describes these weights."""
    cfg = _json(folder / "config.json") or {}
    out: dict = {}
    if family == "huggingface":
        if cfg.get("hidden_size") != d or cfg.get("num_hidden_layers") != layers:
            return out
        for src, dst in (("num_attention_heads", "num_heads"), ("layer_norm_eps", "layer_norm_eps"),
                         ("hidden_act", "hidden_act"), ("pooler_act", "pooler_act")):
            if src in cfg:
                out[dst] = cfg[src]
        pre = _json(folder / "preprocessor_config.json") or {}
        mean, std = _triple(pre.get("image_mean")), _triple(pre.get("image_std"))
        if mean and std and pre.get("do_normalize", True):
            out["pixel_mean"], out["pixel_std"] = mean, std
    elif "architecture" in cfg and cfg.get("num_features") == d:
        args = cfg.get("model_args") if isinstance(cfg.get("model_args"), dict) else {}
        if isinstance(args.get("num_heads"), int):
            out["num_heads"] = args["num_heads"]
        pcfg = cfg.get("pretrained_cfg") if isinstance(cfg.get("pretrained_cfg"), dict) else {}
        mean, std = _triple(pcfg.get("mean")), _triple(pcfg.get("std"))
        if mean and std:
            out["pixel_mean"], out["pixel_std"] = mean, std
        pool = cfg.get("global_pool", args.get("global_pool"))
        if pool not in (None, "", "token"):
            out["global_pool"] = pool
    return out


def read_safetensors(path, *, num_heads: Optional[int] = None) -> Tuple[Flat, dict]:
    """Reads a timm or Hugging Face ViT ``.safetensors`` as vitjax's canonical flat tree.

    Args:
      path: the file (timm ``vit_*``, ``deit_*``, ``vit_*_dinov2``,
        ``*_reg4_dinov2``; Hugging Face ``ViTModel``,
        ``ViTForImageClassification``, ``Dinov2Model``,
        ``Dinov2WithRegistersModel``, with or without the ``vit.`` /
        ``dinov2.`` prefix, in ``save_pretrained`` or transformers-5 module names).
      num_heads: the head count, for a model outside the rule in the module
        docstring (the files do not store it).

    Returns:
      ``(flat, info)``. ``flat``: ``{"cls": [1, 1, D], "embedding/kernel":
      [ph, pw, 3, D], "Transformer/posembed_input/pos_embedding": [1, 1 + g*g, D],
      "Transformer/encoderblock_{i}/.../query/kernel": [D, H, hd], ..., "reg":
      [1, R, D], ".../ls1/scale": [D], "head/kernel": [D, C]}`` float32 at the
      file's own grid. ``info``: ViTConfig field values, keys ``source``
      (``"timm"``, ``"huggingface"`` or the file's ``vitjax.source``
      metadata), ``num_heads``, ``num_registers``, ``layer_scale``,
      ``gelu_approximate``, ``layer_norm_eps``, ``pixel_mean``,
      ``pixel_std`` (3-tuples, [0, 1] pixel units), ``posemb_resize``
      (``"timm"`` or ``"bicubic"``, see :data:`RESAMPLERS`).

    Raises:
      CheckpointError: unreadable file or PyTorch pickle (see :func:`load_safetensors`);
        unknown naming; a missing, extra or mis-shaped tensor (one line naming the key
        and both shapes); a feature the ViT cannot compute, named.
    """
    where = os.fspath(path)
    raw, meta = load_safetensors(path)
    try:
        family, prefix = detect(raw)
    except ValueError as e:
        raise CheckpointError(f"{where}: {e}") from None
    side: dict = {}

    def heads_for(d: int, layers: int) -> int:
        side.update(_sidecar(Path(where).parent, family, d, layers))
        for value, origin in ((num_heads, "num_heads argument"), (meta.get("vitjax.num_heads"), "vitjax.num_heads"),
                              (side.get("num_heads"), "config.json")):
            if value is not None:
                try:
                    return int(value)
                except (TypeError, ValueError):
                    raise CheckpointError(f"{where}: {origin} {value!r} is not an integer") from None
        if d in _HEADS_BY_WIDTH:
            return _HEADS_BY_WIDTH[d]
        if d % 64:
            raise CheckpointError(f"{where}: width {d} is not a multiple of 64; pass num_heads "
                                  "(the file does not store it)")
        return d // 64

    try:
        flat, facts = to_canonical(raw, family, prefix, heads_for)
    except ValueError as e:
        raise CheckpointError(f"{where}: {e}") from None
    if side.get("global_pool"):
        raise CheckpointError(f"{where}: config.json says global_pool={side['global_pool']!r}; "
                              "vitjax reads the class token")
    kind = facts.get("hf_kind", "timm")
    act = side.get("hidden_act", "gelu")
    if act != "gelu" and act not in _APPROX_GELU:
        raise CheckpointError(f"{where}: config.json hidden_act {act!r} is not a GELU")
    if side.get("pooler_act", "tanh") != "tanh" and "pre_logits/kernel" in flat:
        raise CheckpointError(f"{where}: config.json pooler_act {side['pooler_act']!r}; "
                              "the representation layer is tanh")
    if kind == "timm":
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if facts["layer_scale"] else (HALF, HALF)
    else:
        mean, std = (HALF, HALF) if kind == "vit" else (IMAGENET_MEAN, IMAGENET_STD)
    info = {
        "source": meta.get("vitjax.source") or family,
        "num_heads": facts["heads"],
        "num_registers": facts["registers"],
        "layer_scale": facts["layer_scale"],
        "gelu_approximate": act in _APPROX_GELU,
        "layer_norm_eps": float(side.get("layer_norm_eps", 1e-12 if kind == "vit" else 1e-6)),
        "pixel_mean": side.get("pixel_mean", mean),
        "pixel_std": side.get("pixel_std", std),
        "posemb_resize": "bicubic" if kind in ("vit", "dinov2") and not facts["register_key"] else "timm",
    }
    return flat, info
