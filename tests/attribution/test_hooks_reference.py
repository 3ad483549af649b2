"""Activations and interventions against PyTorch: timm and transformers on the same weights.

Tolerances are the parity issue's (#2), float32: max |d| <= 1e-4 * max(1, max |ref|). The models are
random at realistic scales (tests/checkpoints/test_safetensors.py draws them), depth 2, so a wrong site
(before or after a LayerScale, a norm, a residual add) moves values by far more.
"""

from __future__ import annotations

import numpy as np
import pytest

import vitjax
from vitjax.attribution.hooks import ablate_heads, patch_from, run_with_cache, run_with_hooks

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")
from safetensors.torch import save_file  # noqa: E402
from support.reference import nchw as _nchw  # noqa: E402
from support.reference import photo_batch as _photo_batch  # noqa: E402
from support.reference import randomize as _randomize  # noqa: E402


def _close(ours, ref, what):
    ours, ref = np.asarray(ours), np.asarray(ref)
    assert ours.shape == ref.shape, (what, ours.shape, ref.shape)
    err = float(np.abs(ours - ref).max())
    assert err <= 1e-4 * max(1.0, float(np.abs(ref).max())), (what, err)
    return err


def _timm(tmp_path, arch, seed, **kw):
    src = _randomize(timm.create_model(arch, pretrained=False, depth=2, **kw), seed=seed)
    path = tmp_path / f"{arch}.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    model, params = vitjax.load_checkpoint(path, **({"pixel_mean": (0.485, 0.456, 0.406),
                                                     "pixel_std": (0.229, 0.224, 0.225)} if "deit" in arch else {}))
    return src, model, params


@pytest.mark.parametrize("arch,kw", [("deit_small_patch16_224", {}),
                                     ("vit_small_patch14_reg4_dinov2", {"img_size": 224})], ids=["deit", "dinov2-reg4"])
def test_resid_post_equals_timm_forward_intermediates(tmp_path, rng, arch, kw):
    src, model, params = _timm(tmp_path, arch, seed=11, **kw)
    x = _photo_batch(224, rng)
    _, cache = run_with_cache(model, params, x, names=lambda n: n.endswith("resid_post"))
    with torch.no_grad():
        inter = src.forward_intermediates(_nchw(x), indices=2, return_prefix_tokens=True, norm=False,
                                          output_fmt="NLC", intermediates_only=True)
    for layer, (spatial, prefix) in enumerate(inter):
        ref = torch.cat([prefix, spatial], dim=1).numpy()  # [class, registers, patches], as vitjax orders them
        _close(cache["resid_post", layer], ref, f"{arch} layer {layer}")


@pytest.mark.parametrize("kind", ["vit", "dinov2-registers"])
def test_resid_post_equals_transformers_hidden_states(tmp_path, rng, kind):
    if kind == "vit":
        cfg = transformers.ViTConfig(hidden_size=192, num_hidden_layers=2, num_attention_heads=3,
                                     intermediate_size=768, image_size=224, patch_size=16, num_labels=10,
                                     attn_implementation="eager")
        src = _randomize(transformers.ViTForImageClassification(cfg), seed=12)
    else:
        cfg = transformers.Dinov2WithRegistersConfig(hidden_size=192, num_hidden_layers=2, num_attention_heads=3,
                                                     mlp_ratio=4, image_size=224, patch_size=14,
                                                     num_register_tokens=4, attn_implementation="eager")
        src = _randomize(transformers.Dinov2WithRegistersModel(cfg), seed=13)
    src.save_pretrained(tmp_path)
    model, params = vitjax.load_checkpoint(tmp_path / "model.safetensors")
    x = _photo_batch(224, rng)
    _, cache = run_with_cache(model, params, x, names=lambda n: "resid_p" in n)
    with torch.no_grad():
        hidden = src(_nchw(x), output_hidden_states=True).hidden_states
    assert len(hidden) == 3
    _close(cache["resid_pre", 0], hidden[0].numpy(), f"{kind} embeddings")
    for layer in range(2):
        _close(cache["resid_post", layer], hidden[layer + 1].numpy(), f"{kind} layer {layer}")


@pytest.mark.parametrize("arch,kw", [("deit_small_patch16_224", {}),
                                     ("vit_small_patch14_reg4_dinov2", {"img_size": 224})], ids=["deit", "dinov2-reg4"])
def test_zero_ablating_a_head_equals_timm_with_its_slice_of_the_projection_input_zeroed(tmp_path, rng, arch, kw):
    src, model, params = _timm(tmp_path, arch, seed=14, **kw)
    x = _photo_batch(224, rng)
    d = model.config.head_dim
    clean = np.asarray(run_with_hooks(model, params, x, []))
    for layer, head in ((0, 1), (1, 5)):
        def zero(module, args, h=head):
            y = args[0].clone()
            y[..., h * d:(h + 1) * d] = 0
            return (y,)

        handle = src.blocks[layer].attn.proj.register_forward_pre_hook(zero)
        try:
            with torch.no_grad():
                ref = src(_nchw(x)).numpy()
        finally:
            handle.remove()
        ours = run_with_hooks(model, params, x, ablate_heads({layer: head}))
        _close(ours, ref, f"{arch} ablate {layer}.{head}")
        assert float(np.abs(ref - clean).max()) > 1e-2  # the ablation matters: the check is not vacuous


@pytest.mark.parametrize("positions", [None, 0], ids=["whole", "class-token"])
def test_patching_one_layer_from_a_second_image_equals_torch_with_that_activation_replaced(tmp_path, rng, positions):
    src, model, params = _timm(tmp_path, "deit_small_patch16_224", seed=15)
    x = _photo_batch(224, rng)
    layer = 0
    with torch.no_grad():
        captured = []
        h = src.blocks[layer].register_forward_hook(lambda m, a, out: captured.append(out.clone()))
        src(_nchw(x[::-1].copy()))
        h.remove()
        other = captured[0]

        def replace(module, args, out):
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
    _, cache = run_with_cache(model, params, x[::-1], names=[("resid_post", layer)])
    ours = run_with_hooks(model, params, x, patch_from(cache, positions=positions))
    _close(ours, ref, f"patch positions={positions}")
    clean = np.asarray(run_with_hooks(model, params, x, []))
    assert float(np.abs(ref - clean).max()) > 1e-2
