"""vitjax's activations by name against TransformerLens' ViT bridge, on the same weights (issue #19); not a test.

TransformerLens (4.x) reaches Hugging Face ViTs through ``TransformerBridge`` and its ViT
architecture adapter (``transformer_lens/model_bridge/supported_architectures/vit.py``, a bridge over
``ViTForImageClassification``). This script builds a random HF ``ViTForImageClassification``
(realistic weight scales, as ``tests/checkpoints/test_safetensors.py`` draws them), saves it with
``save_pretrained`` into a temporary folder, boots the bridge from that folder offline
(``TransformerBridge.boot_transformers(folder, device="cpu")`` with ``HF_HUB_OFFLINE=1``) and loads
the same ``model.safetensors`` with ``vitjax.load_checkpoint``. On the same fixed inputs (NCHW for
torch, NHWC for vitjax, float32) it reports, for every name in TransformerLens' cache:

* ``same_name``: vitjax's ``run_with_cache`` has that name; shapes and values compared;
* ``alias``: vitjax has the value under another name (``blocks.l.hook_in`` is ``blocks.l.hook_resid_pre``);
* ``derived``: vitjax has no site, the value is computed from vitjax sites and parameters
  (LayerNorm outputs after scale and bias, ``hook_scale``, the classifier's input);
* ``input`` / ``output``: the pixels (NCHW vs vitjax's NHWC) and the logits;

and the vitjax names TransformerLens lacks. Values: ``max_abs`` = max |vitjax - TL|, ``ref_max`` =
max |TL|, ``rel`` = max_abs / max(1, ref_max) (the parity issue's measure, #2; ``ok`` when
<= 1e-4). It also resolves TransformerLens' short names (``get_act_name``) with vitjax's
``site_name``, and compares head ablations: TransformerLens ``run_with_hooks`` zeroing (or
mean-replacing) head h of layer l at ``blocks.l.attn.hook_z`` vs ``vitjax.run_with_hooks(...,
vitjax.ablate_heads({l: h}, mode))``, plus plain HF with that head's slice of ``o_proj``'s input
zeroed (a forward pre-hook, as ``tests/attribution/test_hooks_reference.py`` does for timm), and an
edit of ``hook_pattern`` (TL's post-hoc hook vs ``vitjax.scale_heads``). For a TL value that
matches no vitjax value, the nearest vitjax site of its layer and shape is named.

Timing (optional, ViT-B/16 size at 224 px, batch 8): TransformerLens' loop of L x H single-head
ablations = L x H x the median of a few ablated ``run_with_hooks`` calls spread over the layers
(each call is the same work; the fastest call is reported too, as the shared cores are noisy),
beside plain HF with the pre-hook, timed the same way. Skipped when
the 1-minute load average exceeds ``--max-load`` (another benchmark running on the shared cores)
unless ``--timing on``. vitjax's own loop and ``head_importance`` are timed by
``benchmarks/hooks_speed.py``.

TransformerLens is not a vitjax dependency; run this in a venv that has it, beside the main
environment (the constraints keep torch, transformers, numpy and jax as installed; TransformerLens
4.3.0 needs none of them changed):

    python3 -m venv --system-site-packages /tmp/tlvenv
    printf 'torch==2.14.1\\ntransformers==5.25.0\\nnumpy==2.4.6\\njax==0.10.2\\n' > /tmp/tl-pins.txt
    /tmp/tlvenv/bin/pip install -c /tmp/tl-pins.txt transformer-lens
    /tmp/tlvenv/bin/python benchmarks/transformer_lens_compare.py                # tiny + ViT-B/16 size
    /tmp/tlvenv/bin/python benchmarks/transformer_lens_compare.py --sizes tiny --timing off   # ~20 s

Writes ``benchmarks/results-transformer-lens.json`` (atomically) and prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no network: the bridge boots from a local folder
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

DEFAULT_OUT = HERE / "results-transformer-lens.json"
TOL = 1e-4  # the parity issue's (#2) float32 tolerance: max |d| <= 1e-4 * max(1, max |ref|)

# HF ViTConfig keyword arguments of each size
SIZES = {
    "tiny": dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, intermediate_size=256,
                 image_size=32, patch_size=8, num_labels=10),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                 image_size=224, patch_size=16, num_labels=1000),
}


# --- the model ---------------------------------------------------------------------------------


def _randomize(model, seed: int = 0, peak: float = 2.0):
    """Realistic random weights for an HF ViT, in place (the recipe of tests/checkpoints/test_safetensors.py):
    LayerNorm scales N(1, 0.1), biases N(0, 0.05), matrices N(0, 1/d_in) with query and key rows at
    N(0, peak/d_in) so attention is peaked, the patch convolution N(0, 1/fan_in), tokens N(0, 0.1)."""
    import torch

    g = torch.Generator().manual_seed(seed)

    def normal(shape, std, mean=0.0):
        return torch.randn(shape, generator=g) * std + mean

    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if p.ndim == 1 and leaf == "weight":
                p.copy_(normal(p.shape, 0.1, 1.0))
            elif leaf == "bias":
                p.copy_(normal(p.shape, 0.05))
            elif p.ndim == 2:
                d_in = p.shape[1]
                w = normal(p.shape, d_in ** -0.5)
                if re.search(r"(query|key|q_proj|k_proj)\.weight$", name):
                    w = normal(p.shape, (peak / d_in) ** 0.5)
                p.copy_(w)
            elif p.ndim == 4:
                p.copy_(normal(p.shape, (p.shape[1] * p.shape[2] * p.shape[3]) ** -0.5))
            else:  # class token, position embeddings
                p.copy_(normal(p.shape, 0.1))
    return model.eval()


def _save_hf(size: str, folder: Path, seed: int) -> Dict[str, Any]:
    """A random ``ViTForImageClassification`` of ``size`` saved with ``save_pretrained`` into ``folder``."""
    import torch
    import transformers

    torch.manual_seed(seed)
    cfg = transformers.ViTConfig(**SIZES[size], attn_implementation="eager")
    model = _randomize(transformers.ViTForImageClassification(cfg), seed=seed)
    model.save_pretrained(folder)
    return dict(SIZES[size])


def _inputs(batch: int, image_size: int, seed: int) -> np.ndarray:
    """``[B, H, W, 3]`` float32: uniform noise in [-2, 2] and, first, a smooth normalised pattern."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, (batch, image_size, image_size, 3)).astype(np.float32)
    yy, xx = np.meshgrid(np.linspace(0, 1, image_size), np.linspace(0, 1, image_size), indexing="ij")
    smooth = np.stack([np.sin(6 * xx + 2 * yy), np.cos(5 * yy - xx), 2 * xx * yy - 0.5], -1)
    x[0] = (1.5 * smooth).astype(np.float32)
    return x


def _nchw(x: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


# --- the two runs ------------------------------------------------------------------------------


def _boot_bridge(folder: Path):
    """TransformerLens' bridge over the saved HF model, offline (a local folder; no hub call)."""
    import torch
    from transformer_lens.model_bridge import TransformerBridge

    return TransformerBridge.boot_transformers(str(folder), device="cpu", dtype=torch.float32)


def _tl_aliases(bridge) -> Dict[str, str]:
    """TransformerLens' own alias -> canonical hook name map (``blocks.0.hook_resid_pre`` -> ``blocks.0.hook_in``)."""
    try:
        from transformer_lens.model_bridge.bridge_core import build_alias_to_canonical_map

        return dict(build_alias_to_canonical_map(bridge.hook_dict))
    except Exception:  # noqa: BLE001 - only a label in the report
        return {}


def _stats(ours: np.ndarray, ref: np.ndarray) -> Dict[str, Any]:
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    d = float(np.abs(ours - ref).max()) if ours.size else 0.0
    ref_max = float(np.abs(ref).max()) if ref.size else 0.0
    rel = d / max(1.0, ref_max)
    return {"max_abs": d, "ref_max": ref_max, "rel": rel, "ok": bool(rel <= TOL)}


def _equivalents(layers: int, eps: float, params, images: np.ndarray, logits: np.ndarray
                 ) -> List[Tuple[re.Pattern, str, Callable[[Dict[str, np.ndarray], re.Match], np.ndarray], str]]:
    """(TL name pattern, kind, vitjax value from its cache, what it is) for TL names vitjax lacks."""
    p = params["Transformer"]

    def ln_out(site: str, module: str):
        def fn(c, m):
            layer = m.group(1) if m.groups() else None
            name = site.format(layer=layer)
            ps = p[f"encoderblock_{layer}"][module] if layer is not None else p[module]
            return c[name] * np.asarray(ps["scale"]) + np.asarray(ps["bias"])
        return fn

    def scale(site: str):
        def fn(c, m):
            x = np.asarray(c[site.format(layer=m.group(1) if m.groups() else None)], np.float64)
            return np.sqrt(((x - x.mean(-1, keepdims=True)) ** 2).mean(-1, keepdims=True) + eps)
        return fn

    def same(site: str):
        return lambda c, m: c[site.format(layer=m.group(1) if m.groups() else None)]

    last = f"blocks.{layers - 1}.hook_resid_post"
    b = r"blocks\.(\d+)\."
    return [
        (re.compile(r"embed\.hook_in"), "input", lambda c, m: images.transpose(0, 3, 1, 2),
         "the pixels (NCHW; vitjax takes NHWC images, no site)"),
        (re.compile(r"(?:embed\.hook_out|hook_embed)"), "alias", lambda c, m: c["blocks.0.hook_resid_pre"],
         "class token + patches + position embedding = blocks.0.hook_resid_pre"),
        (re.compile(b + r"(?:hook_in|ln1\.hook_in)"), "alias", same("blocks.{layer}.hook_resid_pre"),
         "blocks.l.hook_resid_pre"),
        (re.compile(b + r"ln1\.hook_scale"), "derived", scale("blocks.{layer}.hook_resid_pre"),
         "sqrt(var(resid_pre) + eps), [B, N, 1]"),
        (re.compile(b + r"(?:ln1\.hook_out|attn\.hook_in|attn\.[qkv]\.hook_in)"), "derived",
         ln_out("blocks.{layer}.ln1.hook_normalized", "LayerNorm_0"),
         "ln1 output after scale and bias = ln1.hook_normalized * w + b"),
        (re.compile(b + r"attn\.([qkv])\.hook_out"), "alias",
         lambda c, m: c[f"blocks.{m.group(1)}.attn.hook_{m.group(2)}"], "blocks.l.attn.hook_q|k|v"),
        (re.compile(b + r"attn\.o\.hook_in"), "alias", same("blocks.{layer}.attn.hook_z"), "blocks.l.attn.hook_z"),
        (re.compile(b + r"(?:attn\.o\.hook_out|attn\.hook_out)"), "alias", same("blocks.{layer}.hook_attn_out"),
         "blocks.l.hook_attn_out"),
        (re.compile(b + r"ln2\.hook_in"), "alias", same("blocks.{layer}.hook_resid_mid"), "blocks.l.hook_resid_mid"),
        (re.compile(b + r"ln2\.hook_scale"), "derived", scale("blocks.{layer}.hook_resid_mid"),
         "sqrt(var(resid_mid) + eps), [B, N, 1]"),
        (re.compile(b + r"(?:ln2\.hook_out|mlp\.hook_in|hook_mlp_in|mlp\.in\.hook_in)"), "derived",
         ln_out("blocks.{layer}.ln2.hook_normalized", "LayerNorm_2"),
         "ln2 output after scale and bias = ln2.hook_normalized * w + b"),
        (re.compile(b + r"mlp\.in\.hook_out"), "alias", same("blocks.{layer}.mlp.hook_pre"), "blocks.l.mlp.hook_pre"),
        (re.compile(b + r"mlp\.out\.hook_in"), "alias", same("blocks.{layer}.mlp.hook_post"),
         "blocks.l.mlp.hook_post"),
        (re.compile(b + r"(?:mlp\.out\.hook_out|mlp\.hook_out)"), "alias", same("blocks.{layer}.hook_mlp_out"),
         "blocks.l.hook_mlp_out"),
        (re.compile(b + r"hook_out"), "alias", same("blocks.{layer}.hook_resid_post"), "blocks.l.hook_resid_post"),
        (re.compile(r"ln_final\.hook_in"), "alias", lambda c, m: c[last], f"{last} (the last block's output)"),
        (re.compile(r"ln_final\.hook_scale"), "derived", scale(last), "sqrt(var(last resid_post) + eps), [B, N, 1]"),
        (re.compile(r"ln_final\.hook_out"), "derived", ln_out("ln_final.hook_normalized", "encoder_norm"),
         "ln_final output after scale and bias"),
        (re.compile(r"unembed\.hook_in"), "derived",
         lambda c, m: ln_out("ln_final.hook_normalized", "encoder_norm")(c, m)[:, 0],
         "the classifier's input: ln_final output of the class token, [B, D]"),
        (re.compile(r"(?:unembed\.hook_out|hook_unembed)"), "output", lambda c, m: logits,
         "the logits: run_with_cache's first output"),
    ]


def compare_names(bridge, model, params, images: np.ndarray) -> Dict[str, Any]:
    """Every TL cache name against vitjax's cache: name, shape, values (see the module docstring)."""
    import torch

    import vitjax

    with torch.no_grad():
        tl_out, tl_cache = bridge.run_with_cache(_nchw(images))
    tl = {k: v.detach().float().numpy() for k, v in tl_cache.items()}
    out, cache = vitjax.run_with_cache(model, params, images)
    ours = {k: np.asarray(v) for k, v in cache.items()}
    logits = np.asarray(out)
    cfg = model.config
    equivalents = _equivalents(cfg.num_layers, cfg.layer_norm_eps, params, images, logits)
    aliases = _tl_aliases(bridge)

    rows = []
    for name, ref in tl.items():
        row: Dict[str, Any] = {"tl_name": name, "tl_shape": list(ref.shape), "tl_alias_of": aliases.get(name)}
        if name in ours:
            row.update(kind="same_name", vitjax="same name")
            value = ours[name]
        else:
            for pattern, kind, fn, what in equivalents:
                m = pattern.fullmatch(name)
                if m:
                    row.update(kind=kind, vitjax=what)
                    value = np.asarray(fn(ours, m))
                    break
            else:
                row.update(kind="none", vitjax=None)
                rows.append(row)
                continue
        row["vitjax_shape"] = list(np.shape(value))
        row["same_shape"] = row["vitjax_shape"] == row["tl_shape"]
        if row["same_shape"]:
            row.update(_stats(value, ref))
        if not row.get("ok"):
            row["closest_vitjax_site"] = _closest(ours, name, ref)
        rows.append(row)
    groups = _group(rows)
    return {
        "by_name": groups,
        "mismatches": [r for r in rows if not r.get("ok")],
        "tl_names": len(tl),
        "vitjax_names": len(ours),
        "vitjax_names_tl_lacks": sorted(set(ours) - set(tl)),
        "tl_names_vitjax_lacks": [k for k, g in groups.items() if g["kind"] != "same_name"],
        "logits": _stats(logits, tl_out.detach().numpy()),
    }


def _group(rows: List[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """Rows by name pattern (``blocks.3.attn.hook_z`` -> ``blocks.l.attn.hook_z``): the worst over layers,
    and ``rel`` per layer."""
    groups: Dict[str, Dict[str, Any]] = {}
    for row in rows:
        key = re.sub(r"blocks\.\d+\.", "blocks.l.", row["tl_name"])
        alias = re.sub(r"blocks\.\d+\.", "blocks.l.", row["tl_alias_of"]) if row["tl_alias_of"] else None
        g = groups.setdefault(key, {"kind": row["kind"], "vitjax": row["vitjax"], "tl_alias_of": alias,
                                    "tl_shape": row["tl_shape"], "vitjax_shape": row.get("vitjax_shape"),
                                    "same_shape": True, "max_abs": 0.0, "rel": 0.0, "ok": True, "rel_each": []})
        g["same_shape"] = g["same_shape"] and bool(row.get("same_shape"))
        g["max_abs"] = max(g["max_abs"], row.get("max_abs", float("nan")))
        g["rel"] = max(g["rel"], row.get("rel", float("nan")))
        g["ok"] = g["ok"] and row.get("ok", False)
        g["rel_each"].append(row.get("rel"))
    return groups


def _closest(ours: Dict[str, np.ndarray], name: str, ref: np.ndarray) -> Optional[Dict[str, Any]]:
    """For a TL value that matches nothing by name: the vitjax site of its layer and shape nearest to it."""
    m = re.match(r"(blocks\.\d+\.)", name)
    prefix = m.group(1) if m else ""
    best = None
    for site, value in ours.items():
        if site.startswith(prefix) and value.shape == ref.shape:
            st = _stats(value, ref)
            if best is None or st["rel"] < best["rel"]:
                best = {"site": site, **st}
    return best


def compare_short_names(layers: int) -> List[Dict[str, Any]]:
    """TransformerLens' ``get_act_name`` vs vitjax's ``site_name`` on the short names both document."""
    from transformer_lens.utilities import get_act_name

    from vitjax.attribution.hooks import site_name

    layer = layers - 1
    keys = [("resid_pre", layer, None), ("resid_mid", layer, None), ("resid_post", layer, None),
            ("attn_out", layer, None), ("mlp_out", layer, None), ("q", layer, None), ("k", layer, None),
            ("v", layer, None), ("z", layer, None), ("attn_scores", layer, None), ("pattern", layer, None),
            ("attn", layer, None), ("pre", layer, None), ("post", layer, None), ("normalized", layer, "ln1"),
            ("normalized", layer, "ln2"), ("normalized", None, None), ("scale", layer, "ln1"),
            ("mlp_in", layer, None), ("embed", None, None)]
    rows = []
    for name, lay, kind in keys:
        try:
            tl = get_act_name(name, lay, kind)
        except Exception as e:  # noqa: BLE001 - reported
            tl = f"error: {e}"
        try:
            ours = site_name(name, lay, kind)
        except ValueError as e:
            ours = f"error: {e}"
        rows.append({"key": [name, lay, kind], "tl": tl, "vitjax": ours, "same": tl == ours})
    return rows


def compare_ablations(bridge, hf_ref, model, params, images: np.ndarray, pairs) -> List[Dict[str, Any]]:
    """Head ablations at ``hook_z``: TL run_with_hooks vs vitjax run_with_hooks(ablate_heads) vs HF pre-hook."""
    import torch

    import vitjax

    d = model.config.head_dim
    x = _nchw(images)
    with torch.no_grad():
        clean = bridge(x).numpy()
    rows = []
    for mode in ("zero", "mean"):
        for layer, head in pairs:
            def tl_hook(z, hook, h=head, zero=mode == "zero"):
                z = z.clone()
                z[:, :, h, :] = 0.0 if zero else z[:, :, h, :].mean(0, keepdim=True)
                return z

            with torch.no_grad():
                tl = bridge.run_with_hooks(x, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", tl_hook)]).numpy()
            ours = np.asarray(vitjax.run_with_hooks(model, params, images, vitjax.ablate_heads({layer: head}, mode)))
            row = {"mode": mode, "layer": layer, "head": head, "vitjax_vs_tl": _stats(ours, tl),
                   "effect_tl_vs_clean": _stats(tl, clean)["max_abs"]}
            if mode == "zero":
                def pre(module, args, h=head):
                    y = args[0].clone()
                    y[..., h * d:(h + 1) * d] = 0
                    return (y,)

                handle = hf_ref.vit.layers[layer].attention.o_proj.register_forward_pre_hook(pre)
                try:
                    with torch.no_grad():
                        hf = hf_ref(x).logits.numpy()
                finally:
                    handle.remove()
                row["tl_vs_hf_prehook"] = _stats(tl, hf)
                row["vitjax_vs_hf_prehook"] = _stats(ours, hf)
            rows.append(row)
    return rows


def compare_pattern_edit(bridge, model, params, images: np.ndarray, layer: int, head: int, factor: float = 0.5
                         ) -> Dict[str, Any]:
    """An edit of ``hook_pattern`` (head ``head`` of ``layer`` times ``factor``): TL run_with_hooks vs
    ``vitjax.scale_heads``, each against its own clean run, and the warnings TL raises."""
    import warnings

    import torch

    import vitjax

    x = _nchw(images)

    def hook(pattern, hook):
        pattern = pattern.clone()
        pattern[:, head] = pattern[:, head] * factor
        return pattern

    with torch.no_grad():
        clean = bridge(x).numpy()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tl = bridge.run_with_hooks(x, fwd_hooks=[(f"blocks.{layer}.attn.hook_pattern", hook)]).numpy()
    ours_clean = np.asarray(vitjax.predict(model, params, images))
    ours = np.asarray(vitjax.run_with_hooks(model, params, images, vitjax.scale_heads({layer: head}, factor)))
    return {"layer": layer, "head": head, "factor": factor,
            "tl_effect_vs_clean": _stats(tl, clean)["max_abs"],
            "vitjax_effect_vs_clean": _stats(ours, ours_clean)["max_abs"],
            "vitjax_vs_tl": _stats(ours, tl),
            "tl_warnings": sorted({str(w.message).split(". ")[0] for w in caught})}


def time_ablation_loop(bridge, hf_ref, images: np.ndarray, layers: int, heads: int, calls: int) -> Dict[str, Any]:
    """Median seconds of ``calls`` single-head zero ablations (TL run_with_hooks; HF pre-hook) x L x H."""
    import torch

    x = _nchw(images)
    d = hf_ref.config.hidden_size // heads
    pairs = [(round(i * (layers - 1) / max(1, calls - 1)), (i * 5) % heads) for i in range(calls)]

    def tl_call(layer, head):
        def hook(z, hook, h=head):
            z = z.clone()
            z[:, :, h, :] = 0.0
            return z
        with torch.no_grad():
            bridge.run_with_hooks(x, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", hook)])

    def hf_call(layer, head):
        def pre(module, args, h=head):
            y = args[0].clone()
            y[..., h * d:(h + 1) * d] = 0
            return (y,)
        handle = hf_ref.vit.layers[layer].attention.o_proj.register_forward_pre_hook(pre)
        try:
            with torch.no_grad():
                hf_ref(x)
        finally:
            handle.remove()

    out: Dict[str, Any] = {"batch": int(images.shape[0]), "calls_timed": calls, "pairs": pairs,
                           "torch_threads": torch.get_num_threads()}
    for name, fn in (("transformer_lens", tl_call), ("hf_prehook", hf_call)):
        t = time.perf_counter()
        fn(0, 0)
        out[f"{name}_first_call_s"] = time.perf_counter() - t
    times: Dict[str, List[float]] = {"transformer_lens": [], "hf_prehook": []}
    for layer, head in pairs:  # alternate, so load from other processes falls on both
        for name, fn in (("transformer_lens", tl_call), ("hf_prehook", hf_call)):
            t = time.perf_counter()
            fn(layer, head)
            times[name].append(time.perf_counter() - t)
    for name, ts in times.items():
        med, low = float(np.median(ts)), float(np.min(ts))
        out[name] = {"times_s": ts, "per_call_median_s": med, "loop_estimate_s": med * layers * heads,
                     "per_call_min_s": low, "loop_estimate_min_s": low * layers * heads}
    out["loop_ablations"] = layers * heads
    out["ratio_tl_over_hf"] = out["transformer_lens"]["per_call_median_s"] / out["hf_prehook"]["per_call_median_s"]
    out["ratio_tl_over_hf_min"] = out["transformer_lens"]["per_call_min_s"] / out["hf_prehook"]["per_call_min_s"]
    return out


# --- one size ------------------------------------------------------------------------------------


def run_size(size: str, *, batch: int, seed: int, timing: bool, timing_batch: int, calls: int) -> Dict[str, Any]:
    import torch
    import transformers

    import vitjax

    with tempfile.TemporaryDirectory(prefix=f"tl-compare-{size}-") as tmp:
        folder = Path(tmp)
        hf_cfg = _save_hf(size, folder, seed)
        t = time.perf_counter()
        bridge = _boot_bridge(folder)
        boot_s = time.perf_counter() - t
        # a second, untouched HF model for the references (the bridge wraps its own copy in place)
        hf_ref = transformers.ViTForImageClassification.from_pretrained(folder, attn_implementation="eager").eval()
        model, params = vitjax.load_checkpoint(folder / "model.safetensors")
        images = _inputs(batch, hf_cfg["image_size"], seed)
        with torch.no_grad():
            hf_logits = hf_ref(_nchw(images)).logits.numpy()
            tl_logits = bridge(_nchw(images)).numpy()
        layers, heads = hf_cfg["num_hidden_layers"], hf_cfg["num_attention_heads"]
        result: Dict[str, Any] = {
            "hf_config": hf_cfg,
            "batch": batch,
            "bridge_boot_s": boot_s,
            "bridge_class": type(bridge).__name__,
            "bridge_vs_hf_logits": _stats(tl_logits, hf_logits),
            "names": compare_names(bridge, model, params, images),
            "short_names": compare_short_names(layers),
            "ablations": compare_ablations(bridge, hf_ref, model, params, images,
                                           [(0, 1), (layers - 1, heads - 1)]),
            "pattern_edit": compare_pattern_edit(bridge, model, params, images, 0, 1),
        }
        if timing:
            t_images = _inputs(timing_batch, hf_cfg["image_size"], seed + 1)
            result["timing"] = time_ablation_loop(bridge, hf_ref, t_images, layers, heads, calls)
        del bridge, hf_ref
    return result


# --- report ----------------------------------------------------------------------------------------


def _fmt(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.2e}"


def markdown(results: Dict[str, Any]) -> str:
    lines = [f"TransformerLens {results['versions'].get('transformer_lens')} bridge vs vitjax "
             f"(torch {results['versions'].get('torch')}, transformers {results['versions'].get('transformers')}, "
             f"jax {results['versions'].get('jax')}); rel = max|d| / max(1, max|TL|), ok <= {TOL:g}", ""]
    for size, r in results["sizes"].items():
        n = r["names"]
        lines += [f"### {size}: {r['hf_config']}, batch {r['batch']}", "",
                  f"TL cache: {n['tl_names']} names; vitjax cache: {n['vitjax_names']} names; "
                  f"vitjax names TL lacks: {n['vitjax_names_tl_lacks'] or 'none'}; "
                  f"logits rel {_fmt(n['logits']['rel'])}; bridge vs HF logits rel "
                  f"{_fmt(r['bridge_vs_hf_logits']['rel'])}", ""]
        # one row per name pattern (layer index replaced by l), worst over layers
        lines += ["| TL name | TL alias of | vitjax | TL shape | same shape | max abs | rel | ok |",
                  "|---|---|---|---|---|---|---|---|"]
        for key, g in n["by_name"].items():
            lines.append(f"| `{key}` | {g['tl_alias_of'] or ''} | {g['kind']}: {g['vitjax']} | {g['tl_shape']} | "
                         f"{g['same_shape']} | {_fmt(g['max_abs'])} | {_fmt(g['rel'])} | {g['ok']} |")
        diff = [s for s in r["short_names"] if not s["same"]]
        lines += ["", f"Short names (get_act_name vs site_name): {len(r['short_names']) - len(diff)} of "
                      f"{len(r['short_names'])} resolve alike"]
        for s in diff:
            lines.append(f"- {tuple(s['key'])}: TL `{s['tl']}`, vitjax `{s['vitjax']}`")
        lines += ["", "| ablation | vitjax vs TL rel | TL vs HF pre-hook rel | vitjax vs HF rel | effect (max abs) |",
                  "|---|---|---|---|---|"]
        for a in r["ablations"]:
            lines.append(f"| {a['mode']} L{a['layer']} H{a['head']} | {_fmt(a['vitjax_vs_tl']['rel'])} | "
                         f"{_fmt(a.get('tl_vs_hf_prehook', {}).get('rel'))} | "
                         f"{_fmt(a.get('vitjax_vs_hf_prehook', {}).get('rel'))} | {_fmt(a['effect_tl_vs_clean'])} |")
        pe = r["pattern_edit"]
        lines += ["", f"Pattern edit (L{pe['layer']} H{pe['head']} x {pe['factor']} at hook_pattern): logits moved by "
                      f"{_fmt(pe['tl_effect_vs_clean'])} in TL, {_fmt(pe['vitjax_effect_vs_clean'])} in vitjax "
                      f"(scale_heads); vitjax vs TL rel {_fmt(pe['vitjax_vs_tl']['rel'])}; TL warned: "
                      f"{pe['tl_warnings'] or 'nothing'}"]
        bad = n["mismatches"]
        if bad:
            lines += ["", "TL names whose value matches no vitjax value of that name (closest vitjax site):"]
            for row in bad:
                c = row.get("closest_vitjax_site") or {}
                lines.append(f"- `{row['tl_name']}`: vs {row['vitjax']} rel {_fmt(row.get('rel'))}; closest "
                             f"`{c.get('site')}` rel {_fmt(c.get('rel'))}")
        t = r.get("timing")
        if t:
            lines += ["", f"Timing, batch {t['batch']}, {t['loop_ablations']} single-head ablations "
                          f"(median of {t['calls_timed']} calls x {t['loop_ablations']}): TransformerLens "
                          f"{t['transformer_lens']['per_call_median_s']:.3f} s/call -> "
                          f"{t['transformer_lens']['loop_estimate_s']:.1f} s; HF pre-hook "
                          f"{t['hf_prehook']['per_call_median_s']:.3f} s/call -> "
                          f"{t['hf_prehook']['loop_estimate_s']:.1f} s; TL / HF {t['ratio_tl_over_hf']:.2f} "
                          f"(fastest calls: TL {t['transformer_lens']['per_call_min_s']:.3f} s, HF "
                          f"{t['hf_prehook']['per_call_min_s']:.3f} s, TL / HF {t['ratio_tl_over_hf_min']:.2f})"]
        elif "timing_skipped" in r:
            lines += ["", f"Timing skipped: {r['timing_skipped']}"]
        lines.append("")
    return "\n".join(lines)


def _versions() -> Dict[str, Optional[str]]:
    from importlib import metadata

    out = {}
    for dist in ("transformer-lens", "torch", "transformers", "jax", "flax", "numpy"):
        try:
            out[dist.replace("-", "_")] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist.replace("-", "_")] = None
    return out


def _write_json(path: Path, data: Dict[str, Any]) -> None:
    """Atomic: a temporary file in the same folder, then ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
            f.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the results from other users
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="tiny,base", help="comma-separated: " + ", ".join(SIZES))
    p.add_argument("--batch", type=int, default=2, help="images compared per size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timing", choices=("auto", "on", "off"), default="auto",
                   help="ViT-B/16-size ablation-loop timing; auto: only when the load average <= --max-load")
    p.add_argument("--max-load", type=float, default=1.5)
    p.add_argument("--timing-batch", type=int, default=8)
    p.add_argument("--calls", type=int, default=6, help="ablated calls timed per framework (alternating)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    bad = [s for s in sizes if s not in SIZES]
    if bad or not sizes:
        print(f"error: --sizes: unknown size(s) {bad}; choose from {', '.join(SIZES)}", file=sys.stderr)
        return 2
    if args.batch < 1 or args.timing_batch < 1 or args.calls < 1:
        print("error: --batch, --timing-batch and --calls must be >= 1", file=sys.stderr)
        return 2
    try:
        import transformer_lens  # noqa: F401
    except ImportError as e:
        print(f"error: TransformerLens is not installed in this Python ({sys.executable}): {e}; "
              "see this file's docstring for the venv", file=sys.stderr)
        return 2

    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    results: Dict[str, Any] = {"versions": _versions(), "python": platform.python_version(),
                               "cpu": platform.processor() or platform.machine(),
                               "cores": len(os.sched_getaffinity(0)), "tolerance_rel": TOL,
                               "boot": "TransformerBridge.boot_transformers(<save_pretrained folder>, device='cpu', "
                                       "dtype=torch.float32) with HF_HUB_OFFLINE=1",
                               "sizes": {}}
    load = os.getloadavg()[0]  # before this process adds its own
    results["load_average_at_start"] = load
    for size in sizes:
        timing = False
        skipped = None
        if size == "base" and args.timing != "off":
            timing = args.timing == "on" or load <= args.max_load
            if not timing:
                skipped = f"1-minute load average {load:.2f} > {args.max_load} (another process on the shared cores)"
        t = time.perf_counter()
        r = run_size(size, batch=args.batch, seed=args.seed, timing=timing, timing_batch=args.timing_batch,
                     calls=args.calls)
        r["wall_s"] = time.perf_counter() - t
        r["load_average_after"] = list(os.getloadavg())
        if skipped:
            r["timing_skipped"] = skipped
        results["sizes"][size] = r
        _write_json(args.out, results)  # after each size, so a later failure keeps what was measured
    print(markdown(results))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
