"""timm and Hugging Face ViT state dicts -> vitjax's canonical (Google ``.npz``) flat tree.

Naming follows timm's ``vision_transformer.py`` (``VisionTransformer``:
``cls_token``, ``reg_token``, ``pos_embed``, ``patch_embed.proj``,
``blocks.i.{norm1, attn.qkv, attn.proj, ls1.gamma, norm2, mlp.fc1, mlp.fc2,
ls2.gamma}``, ``norm``, ``head``) and Hugging Face's ``modeling_vit.py`` /
``modeling_dinov2.py`` / ``modeling_dinov2_with_registers.py`` (names as
``save_pretrained`` writes them, and transformers-5 module names ``layers.i``,
``attention.{q,k,v,o}_proj``, ``mlp.fc1/fc2``). Every tensor is renamed to a
role, every role checked against the width D and MLP width read from the
file, then laid out as Google's tree:

* torch ``Linear`` weight ``(out, in)`` -> Flax kernel ``(in, out)``;
* fused timm ``qkv (3D, D)`` -> ``query|key|value/kernel [D, H, hd]``, biases ``[H, hd]``;
* attention output ``(D, D)`` -> ``out/kernel [H, hd, D]``;
* patch conv ``(D, 3, ph, pw)`` -> ``embedding/kernel (ph, pw, 3, D)``;
* LayerScale ``ls1.gamma`` / ``layer_scale1.lambda1`` -> ``ls1/scale`` (``ls2`` likewise);
* register tokens ``reg_token`` / ``embeddings.register_tokens`` -> ``reg [1, R, D]``;
* position embedding -> ``[1, 1 + gh*gw, D]`` with the class slot first (the grid's shape
  from a ``config.json``, else square, else the size asked for when its patch count fits;
  see :func:`to_canonical`): a timm
  ``no_embed_class`` file (no class slot) gets a zero class row (the class token
  then carries no position, as in timm); register slots of a timm file that
  gives registers a position are folded into ``reg`` (both are constants added
  to the same token, so the sum is exact);
* Hugging Face ``pooler.dense`` (``ViTModel``'s Dense + tanh on the class token)
  -> ``pre_logits`` (Google's representation layer, the same computation);
* Hugging Face ``embeddings.mask_token`` is dropped: it only replaces masked
  patches during masked-image pre-training and never enters an inference forward pass.

A layer without a bias in the file (timm ``qkv_bias=False``, Hugging Face
``qkv_bias=False``) gets a zero bias, which computes the same thing; this is
allowed only when no block has that bias. Anything else the canonical ViT
cannot compute (``fc_norm``, ``norm_pre``, attention pooling, distillation
tokens of timm's and Hugging Face's DeiT, QK-norm, SwiGLU MLPs, a two-input DINOv2
classifier) is refused by name.
"""

from __future__ import annotations

import re
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np

from vitjax.errors import CheckpointError

Flat = Dict[str, np.ndarray]

ATT = "MultiHeadDotProductAttention_1"
POSEMB = "Transformer/posembed_input/pos_embedding"

# Block roles and the canonical leaf each one fills (for roles that map one-to-one).
_BLOCK_LEAF = {
    "norm1_w": "LayerNorm_0/scale", "norm1_b": "LayerNorm_0/bias",
    "norm2_w": "LayerNorm_2/scale", "norm2_b": "LayerNorm_2/bias",
    "fc1_b": "MlpBlock_3/Dense_0/bias", "fc2_b": "MlpBlock_3/Dense_1/bias",
    "o_b": f"{ATT}/out/bias", "ls1": "ls1/scale", "ls2": "ls2/scale",
}

_TIMM_GLOBAL = {
    "cls_token": "cls", "reg_token": "reg", "pos_embed": "pos",
    "patch_embed.proj.weight": "patch_w", "patch_embed.proj.bias": "patch_b",
    "norm.weight": "norm_w", "norm.bias": "norm_b", "head.weight": "head_w", "head.bias": "head_b",
}
_TIMM_BLOCK = {
    "norm1.weight": "norm1_w", "norm1.bias": "norm1_b", "attn.qkv.weight": "qkv_w", "attn.qkv.bias": "qkv_b",
    "attn.proj.weight": "o_w", "attn.proj.bias": "o_b", "ls1.gamma": "ls1",
    "norm2.weight": "norm2_w", "norm2.bias": "norm2_b", "mlp.fc1.weight": "fc1_w", "mlp.fc1.bias": "fc1_b",
    "mlp.fc2.weight": "fc2_w", "mlp.fc2.bias": "fc2_b", "ls2.gamma": "ls2",
}
_TIMM_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.(.+)$")
_TIMM_REFUSED = [
    (r"^fc_norm\.", "global-average pooling with its own LayerNorm (fc_norm)"),
    (r"^norm_pre\.", "a LayerNorm before the blocks (norm_pre, CLIP-style)"),
    (r"^attn_pool\.", "an attention-pooling (MAP) head"),
    (r"^(dist_token|head_dist\.)", "a DeiT distillation token and head"),
    (r"^blocks\.\d+\.attn\.[qk]_norm\.", "QK-norm"),
    (r"^blocks\.\d+\.(attn\.norm|mlp\.norm)\.", "extra norms inside attention/MLP"),
    (r"^blocks\.\d+\.mlp\.(fc1_g|fc1_x|w12|w3)\.", "a SwiGLU MLP"),
    (r"^blocks\.\d+\.\d+\.", "chunked blocks (original DINOv2 block_chunks)"),
    (r"^patch_embed\.norm\.", "a LayerNorm after the patch embedding"),
    (r"^(mask_token|register_tokens)$", "the original facebookresearch DINOv2 layout (use timm's or HF's copy)"),
]

_HF_GLOBAL = {
    "embeddings.cls_token": "cls", "embeddings.register_tokens": "reg", "embeddings.position_embeddings": "pos",
    "embeddings.mask_token": "drop",
    "embeddings.patch_embeddings.projection.weight": "patch_w",
    "embeddings.patch_embeddings.projection.bias": "patch_b",
    "layernorm.weight": "norm_w", "layernorm.bias": "norm_b",
    "pooler.dense.weight": "pre_w", "pooler.dense.bias": "pre_b",
}
_HF_OUTER = {"classifier.weight": "head_w", "classifier.bias": "head_b"}
_HF_BLOCK = {}
for _names, _role in [
    (("norm1", "layernorm_before"), "norm1"),
    (("attention.attention.query", "attention.q_proj"), "q"),
    (("attention.attention.key", "attention.k_proj"), "k"),
    (("attention.attention.value", "attention.v_proj"), "v"),
    (("attention.output.dense", "attention.o_proj"), "o"),
    (("norm2", "layernorm_after"), "norm2"),
    (("mlp.fc1", "intermediate.dense"), "fc1"),
    (("mlp.fc2", "output.dense"), "fc2"),
]:
    for _n in _names:
        _HF_BLOCK[_n + ".weight"], _HF_BLOCK[_n + ".bias"] = _role + "_w", _role + "_b"
_HF_BLOCK.update({"layer_scale1.lambda1": "ls1", "layer_scale2.lambda1": "ls2"})
_HF_BLOCK_RE = re.compile(r"^(?:encoder\.layer|layers)\.(\d+)\.(.+)$")
_HF_REFUSED = [
    (r"\.mlp\.(weights_in|weights_out|gate_proj|up_proj|down_proj)\.", "a SwiGLU MLP (DINOv2-giant)"),
    (r"(^|\.)(distillation_token|distillation_classifier\.)", "a DeiT distillation token"),
]
HF_PREFIXES = ("", "vit.", "dinov2.")
_HF_NAMES = {
    "vit": {"norm1": "layernorm_before", "norm2": "layernorm_after",
            "fc1": "intermediate.dense", "fc2": "output.dense"},
    "dinov2": {"norm1": "norm1", "norm2": "norm2", "fc1": "mlp.fc1", "fc2": "mlp.fc2"},
}
_HF_ATTN = {"q": "attention.attention.query", "k": "attention.attention.key", "v": "attention.attention.value",
            "o": "attention.output.dense", "ls1": "layer_scale1.lambda1", "ls2": "layer_scale2.lambda1"}


def _hf_block_name(role: str, kind: str) -> str:
    """The ``save_pretrained`` name of a block role, e.g. ``("fc1_w", "vit") -> "intermediate.dense.weight"``."""
    if role in ("ls1", "ls2"):
        return _HF_ATTN[role]
    base, leaf = role.rsplit("_", 1)
    return (_HF_NAMES[kind].get(base) or _HF_ATTN[base]) + (".weight" if leaf == "w" else ".bias")


def _fmt(shape) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"



def detect(keys) -> Tuple[str, str]:
    """``("timm" | "huggingface", hf_prefix)`` from the key names, or CheckpointError.

    Hugging Face DeiT files (``deit.embeddings.distillation_token``; ``DeiTModel``,
    ``DeiTForImageClassification``, ``...WithTeacher``) are refused by name, as timm's
    distilled files are: the distillation token is a second prefix token with its own
    position, which the canonical ViT does not compute.
    """
    shapes = keys if isinstance(keys, Mapping) else {}
    keys = set(keys)
    for k in sorted(keys):
        if k == "distillation_token" or k.endswith("embeddings.distillation_token"):
            shape = f" {_fmt(shapes[k].shape)}" if k in shapes else ""
            raise CheckpointError(f"key {k!r}{shape}: a DeiT distillation token is not supported by vitjax's ViT "
                                  "(Hugging Face DeiT and timm's distilled DeiT add a second prefix token)")
    if "patch_embed.proj.weight" in keys:
        return "timm", ""
    for k in sorted(keys):
        if k.endswith("embeddings.patch_embeddings.projection.weight"):
            prefix = k[: -len("embeddings.patch_embeddings.projection.weight")]
            if prefix not in HF_PREFIXES:
                raise CheckpointError(f"key {k!r}: prefix {prefix!r} is not one of {', '.join(map(repr, HF_PREFIXES))}")
            return "huggingface", prefix
    raise CheckpointError(
        "no patch-embedding key ('patch_embed.proj.weight' for timm, 'embeddings.patch_embeddings.projection.weight'"
        " for Hugging Face); not a ViT state dict vitjax reads"
    )


def _put(roles: dict, role: str, key: str, arr: np.ndarray) -> None:
    if role in roles:
        raise CheckpointError(f"keys {roles[role][0]!r} and {key!r} are two names for the same weight; "
                              "the file mixes namings")
    roles[role] = (key, arr)


def _assign(flat: Mapping[str, np.ndarray], family: str, prefix: str):
    """Splits keys into global roles and per-block roles; refuses unknown or unsupported keys."""
    glob: Dict[str, Tuple[str, np.ndarray]] = {}
    blocks: Dict[int, Dict[str, Tuple[str, np.ndarray]]] = {}
    unknown: List[str] = []
    refused = _TIMM_REFUSED if family == "timm" else _HF_REFUSED
    for key, arr in flat.items():
        for pattern, what in refused:
            if re.search(pattern, key):
                raise CheckpointError(f"key {key!r} {_fmt(arr.shape)}: {what} is not supported by vitjax's ViT")
        if family == "timm":
            name, table, block_re, block_table = key, _TIMM_GLOBAL, _TIMM_BLOCK_RE, _TIMM_BLOCK
        else:
            if key in _HF_OUTER:
                _put(glob, _HF_OUTER[key], key, arr)
                continue
            if not key.startswith(prefix):
                unknown.append(f"{key} {_fmt(arr.shape)}")
                continue
            name, table, block_re, block_table = key[len(prefix):], _HF_GLOBAL, _HF_BLOCK_RE, _HF_BLOCK
        if name in table:
            _put(glob, table[name], key, arr)
        elif (m := block_re.match(name)) and m.group(2) in block_table:
            _put(blocks.setdefault(int(m.group(1)), {}), block_table[m.group(2)], key, arr)
        else:
            unknown.append(f"{key} {_fmt(arr.shape)}")
    if unknown:
        raise CheckpointError(f"{len(unknown)} unrecognised {family} key(s): " + ", ".join(unknown[:8])
                     + (" ..." if len(unknown) > 8 else ""))
    return glob, blocks


def _need(roles: Mapping, role: str, shape: Tuple[int, ...], missing_key: str) -> np.ndarray:
    """The tensor for ``role``, checked to be ``shape``; CheckpointError naming the key and both shapes."""
    if role not in roles:
        raise CheckpointError(f"key {missing_key!r} {_fmt(shape)} is missing")
    key, arr = roles[role]
    if tuple(arr.shape) != tuple(shape):
        raise CheckpointError(f"key {key!r} has shape {_fmt(arr.shape)}, expected {_fmt(shape)}")
    return arr


def _square(n: int) -> Optional[int]:
    g = int(round(np.sqrt(n))) if n > 0 else 0
    return g if g > 0 and g * g == n else None


def _position_layout(pos_key: str, n_pos: int, d: int, slots: List[int], grid_fn, ph: int, pw: int):
    """``(slot, (gh, gw))``: how many leading position slots precede a ``gh x gw`` grid.

    The grid's shape comes, in order, from what ``grid_fn(ph, pw)`` says is known (a
    ``config.json``: it must fit), a square grid, or the first hint of ``grid_fn`` (the
    trained input size, the size asked for) whose patch count fits. A token count that none
    of these explains is refused in one line saying how to supply the shape.
    """
    known, hints = grid_fn(ph, pw) if grid_fn is not None else (None, [])
    if known is not None:
        (gh, gw), origin = known
        slot = n_pos - gh * gw
        if slot not in slots:
            raise CheckpointError(f"{origin} gives a {gh}x{gw} patch grid, but key {pos_key!r} has {n_pos} positions "
                                  f"(expected {' or '.join(str(s + gh * gw) for s in sorted(set(slots)))})")
        return slot, (gh, gw)
    for s in slots:
        if n_pos > s and (g := _square(n_pos - s)):
            return s, (g, g)
    for gh, gw in hints:
        if n_pos - gh * gw in slots:
            return n_pos - gh * gw, (gh, gw)
    n = n_pos - (1 if 1 in slots else slots[0])  # the patch positions after a class slot, the usual layout
    if n < 1:
        raise CheckpointError(f"key {pos_key!r} has shape (1, {n_pos}, {d}): no patch positions")
    pairs = [(a, n // a) for a in range(2, int(np.sqrt(n)) + 1) if n % a == 0][-2:]
    example = " or ".join(f"({a * ph}, {b * pw})" for a, b in pairs) if pairs else f"({ph}, {n * pw})"
    raise CheckpointError(f"key {pos_key!r} has shape (1, {n_pos}, {d}): its {n} patch positions are not a square "
                          f"grid and nothing says their shape; pass image_size=(height, width) of the size it was "
                          f"trained at (a grid of {n} patches of {ph}x{pw} px, e.g. {example}), or keep the "
                          "config.json it was saved with beside the file")


def to_canonical(flat: Mapping[str, np.ndarray], family: str, prefix: str, num_heads_fn,
                 grid_fn=None) -> Tuple[Flat, dict]:
    """Renames and re-lays out a timm or Hugging Face state dict (see the module docstring).

    Args:
      flat: ``{torch_name: ndarray}`` as stored.
      family: ``"timm"`` or ``"huggingface"`` (from :func:`detect`).
      prefix: the Hugging Face prefix (``""``, ``"vit."``, ``"dinov2."``).
      num_heads_fn: ``num_heads_fn(D, L) -> H``; the files do not store the head count.
      grid_fn: ``grid_fn(ph, pw) -> (known, hints)``: ``known`` is ``((gh, gw), origin)`` when a
        file says the shape of the position grid (``origin`` names it for messages), else
        None; ``hints`` grids to try, in order, when the position count is not a square (see
        :func:`_position_layout`). None: square grids only.

    Returns:
      ``(canonical flat tree, facts)`` with facts ``hidden``, ``layers``, ``heads``,
      ``registers``, ``layer_scale``, ``grid`` (the file's own ``(gh, gw)``), ``hf_kind``
      (``"vit"``/``"dinov2"``, HF only).

    Raises:
      CheckpointError: one line naming the key and both shapes, or the unsupported feature;
        a tensor with a zero-sized dimension (other than zero register tokens).
    """
    for key, arr in flat.items():
        if 0 in np.shape(arr) and not key.endswith(("reg_token", "register_tokens")):
            raise CheckpointError(f"key {key!r} has shape {_fmt(np.shape(arr))}, with a zero-sized dimension; "
                                  "not a usable weight")
    glob, blocks = _assign(flat, family, prefix)
    tk = (lambda s: s) if family == "timm" else (lambda s: prefix + s)
    patch_key = "patch_embed.proj.weight" if family == "timm" else tk("embeddings.patch_embeddings.projection.weight")
    patch = glob["patch_w"][1]
    if patch.ndim != 4 or patch.shape[1] != 3:
        raise CheckpointError(f"key {patch_key!r} has shape {_fmt(patch.shape)}, expected (D, 3, ph, pw)")
    d, _, ph, pw = (int(s) for s in patch.shape)
    layers = sorted(blocks)
    if not layers:
        raise CheckpointError(f"{family} state dict has no transformer blocks")
    if layers != list(range(len(layers))):
        raise CheckpointError(f"transformer blocks are not numbered 0..{len(layers) - 1}: {layers}")
    n_layers = len(layers)
    heads = int(num_heads_fn(d, n_layers))
    if heads < 1 or d % heads:
        raise CheckpointError(f"hidden size {d} is not divisible by num_heads {heads}")
    hd = d // heads
    out: Flat = {}

    hf_kind = None
    if family == "huggingface":
        hf_kind = "vit" if any("layernorm_before" in k for k in flat) else "dinov2"

    def name(role: str, i: Optional[int] = None) -> str:  # the file's key for a role (for messages)
        if family == "timm":
            inv = {v: k for k, v in (_TIMM_GLOBAL if i is None else _TIMM_BLOCK).items()}
            return inv[role] if i is None else f"blocks.{i}.{inv[role]}"
        if i is None:
            inv = {v: k for k, v in {**_HF_GLOBAL, **_HF_OUTER}.items()}
            return inv[role] if role in ("head_w", "head_b") else prefix + inv[role]
        return f"{prefix}encoder.layer.{i}.{_hf_block_name(role, hf_kind)}"

    # Embedding, class token, registers, position embedding.
    out["embedding/kernel"] = np.transpose(patch, (2, 3, 1, 0))
    out["embedding/bias"] = (
        _need(glob, "patch_b", (d,), name("patch_b")) if "patch_b" in glob else np.zeros(d, patch.dtype)
    )
    has_cls = "cls" in glob
    if has_cls:
        out["cls"] = _need(glob, "cls", (1, 1, d), name("cls"))
    registers = 0
    if "reg" in glob:
        key, reg = glob["reg"]
        if reg.ndim != 3 or reg.shape[0] != 1 or reg.shape[2] != d:
            raise CheckpointError(f"key {key!r} has shape {_fmt(reg.shape)}, expected (1, R, {d})")
        if not has_cls:
            raise CheckpointError(f"key {key!r}: register tokens without a class token are not supported")
        registers = int(reg.shape[1])
        reg = reg.copy()
    if "pos" not in glob:
        raise CheckpointError(f"key {name('pos')!r} (1, N, {d}) is missing")
    pos_key, pos = glob["pos"]
    if pos.ndim != 3 or pos.shape[0] != 1 or pos.shape[2] != d:
        raise CheckpointError(f"key {pos_key!r} has shape {_fmt(pos.shape)}, expected (1, N, {d})")
    n_pos = int(pos.shape[1])
    slots = [0] if not has_cls else ([1 + registers, 1, 0] if family == "timm" else [1])
    slots = list(dict.fromkeys(slots))
    slot, grid_shape = _position_layout(pos_key, n_pos, d, slots, grid_fn, ph, pw)
    grid = pos[:, slot:]
    if slot > 1:
        reg = reg + pos[:, 1:slot]  # timm gives registers a position: fold it into the tokens
    if has_cls:
        cls_slot = pos[:, :1] if slot >= 1 else np.zeros((1, 1, d), pos.dtype)
        grid = np.concatenate([cls_slot, grid], axis=1)
    out[POSEMB] = grid
    if registers:
        out["reg"] = reg
    out["Transformer/encoder_norm/scale"] = _need(glob, "norm_w", (d,), name("norm_w"))
    out["Transformer/encoder_norm/bias"] = _need(glob, "norm_b", (d,), name("norm_b"))

    # Heads.
    if "pre_w" in glob:
        key, w = glob["pre_w"]
        if w.ndim != 2 or w.shape[1] != d:
            raise CheckpointError(f"key {key!r} has shape {_fmt(w.shape)}, expected (P, {d})")
        out["pre_logits/kernel"] = w.T
        out["pre_logits/bias"] = _need(glob, "pre_b", (w.shape[0],), name("pre_b"))
    feat = out["pre_logits/kernel"].shape[1] if "pre_w" in glob else d
    if "head_w" in glob:
        key, w = glob["head_w"]
        if family == "huggingface" and w.ndim == 2 and w.shape[1] == 2 * d:
            raise CheckpointError(f"key {key!r} has shape {_fmt(w.shape)}: a DINOv2 classifier on [class token, "
                                  "mean patch "
                         "token] (2D inputs) is not supported; use the backbone (Dinov2Model) weights")
        if w.ndim != 2 or w.shape[1] != feat:
            raise CheckpointError(f"key {key!r} has shape {_fmt(w.shape)}, expected (C, {feat})")
        out["head/kernel"] = w.T
        out["head/bias"] = _need(glob, "head_b", (w.shape[0],), name("head_b"))
    elif "head_b" in glob:
        raise CheckpointError(f"key {name('head_w')!r} (C, {feat}) is missing (the file has {glob['head_b'][0]!r})")

    # Blocks.
    if "fc1_w" not in blocks[0]:
        raise CheckpointError(f"key {name('fc1_w', 0)!r} (M, {d}) is missing")
    mlp = int(blocks[0]["fc1_w"][1].shape[0])
    ls_blocks = sum("ls1" in b for b in blocks.values())
    if ls_blocks not in (0, n_layers):
        raise CheckpointError(f"LayerScale present in {ls_blocks} of {n_layers} blocks; a file has it in all or none")
    fused = family == "timm"
    bias_roles = ("qkv_b",) if fused else ("q_b", "k_b", "v_b")
    has_qkv_bias = {r: sum(r in b for b in blocks.values()) for r in bias_roles}
    for r, n in has_qkv_bias.items():
        if n not in (0, n_layers):
            i = next(i for i in layers if r not in blocks[i])
            raise CheckpointError(f"key {name(r, i)!r} is missing (other blocks have it)")
    zero = np.zeros(d, np.float32)
    for i in layers:
        roles, pre = blocks[i], f"Transformer/encoderblock_{i}/"
        shapes = {"norm1_w": (d,), "norm1_b": (d,), "norm2_w": (d,), "norm2_b": (d,), "o_b": (d,),
                  "fc1_b": (mlp,), "fc2_b": (d,), "ls1": (d,), "ls2": (d,)}
        for role, leaf in _BLOCK_LEAF.items():
            if role in ("ls1", "ls2") and not ls_blocks:
                continue
            out[pre + leaf] = _need(roles, role, shapes[role], name(role, i))
        if fused:
            w = _need(roles, "qkv_w", (3 * d, d), name("qkv_w", i))
            b = _need(roles, "qkv_b", (3 * d,), name("qkv_b", i)) if has_qkv_bias["qkv_b"] else np.zeros(3 * d)
            parts = [(w[j * d:(j + 1) * d], b[j * d:(j + 1) * d]) for j in range(3)]
        else:
            parts = []
            for r in "qkv":
                w = _need(roles, r + "_w", (d, d), name(r + "_w", i))
                b = _need(roles, r + "_b", (d,), name(r + "_b", i)) if has_qkv_bias[r + "_b"] else zero
                parts.append((w, b))
        for leaf, (w, b) in zip(("query", "key", "value"), parts, strict=True):
            out[f"{pre}{ATT}/{leaf}/kernel"] = w.T.reshape(d, heads, hd)
            out[f"{pre}{ATT}/{leaf}/bias"] = np.asarray(b, w.dtype).reshape(heads, hd)
        o = _need(roles, "o_w", (d, d), name("o_w", i))
        out[f"{pre}{ATT}/out/kernel"] = o.T.reshape(heads, hd, d)
        out[f"{pre}MlpBlock_3/Dense_0/kernel"] = _need(roles, "fc1_w", (mlp, d), name("fc1_w", i)).T
        out[f"{pre}MlpBlock_3/Dense_1/kernel"] = _need(roles, "fc2_w", (d, mlp), name("fc2_w", i)).T
    facts = {
        "hidden": d, "layers": n_layers, "heads": heads, "registers": registers,
        "register_key": "reg" in glob, "layer_scale": bool(ls_blocks),
        "patch": (ph, pw), "grid_tokens": out[POSEMB].shape[1] - int(has_cls), "grid": grid_shape,
    }
    if hf_kind:
        facts["hf_kind"] = hf_kind
    return {k: np.ascontiguousarray(v) for k, v in out.items()}, facts
