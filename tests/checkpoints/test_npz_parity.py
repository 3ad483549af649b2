"""Parity with the reference implementation (timm + timm's own .npz loader), float32.

Tolerances (issue #2): logits max |d| <= 1e-4 * max(1, max |logit|); first layer's
attention <= 1e-5 (plain ViTs); every layer's attention <= 1e-4.
"""

import numpy as np
import pytest

import vitjax

pytest.importorskip("timm")
from support.reference import timm_forward, timm_model  # noqa: E402


def _images(size, rng):
    """A real photo (matplotlib's bundled portrait) and uniform noise, [2, H, W, 3] in [-1, 1]."""
    from matplotlib import cbook

    photo = vitjax.preprocess(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False), size)
    noise = rng.uniform(-1, 1, photo.shape).astype(np.float32)
    return np.stack([photo, noise])


def _compare(model, params, ref, images, *, first_layer_tol):
    logits, attention = vitjax.forward(model, params, images)
    ref_logits, _, ref_attention = timm_forward(ref, images)
    logits, attention = np.asarray(logits), np.asarray(attention)
    assert attention.shape == ref_attention.shape
    tol = 1e-4 * max(1.0, float(np.abs(ref_logits).max()))
    assert np.abs(logits - ref_logits).max() <= tol
    per_layer = np.abs(attention - ref_attention).max(axis=(0, 2, 3, 4))
    if first_layer_tol is not None:
        assert per_layer[0] <= first_layer_tol, per_layer
    assert per_layer.max() <= 1e-4, per_layer
    # the attention is peaked, so these bounds are tight relative to the values
    assert ref_attention.max() > 0.3
    return ref_logits


@pytest.mark.parametrize(
    "variant,size",
    [("testing", 224), ("ViT-B_16", 224)],
)
def test_plain_vit_parity(make_checkpoint, rng, variant, size):
    path = make_checkpoint(variant, image_size=size)
    model, params = vitjax.load_checkpoint(path)
    ref = timm_model(model.config, path)
    _compare(model, params, ref, _images(size, rng), first_layer_tol=1e-5)


def test_hybrid_r50_vit_b16_384_parity(make_checkpoint, rng):
    path = make_checkpoint("R50+ViT-B_16", image_size=384)
    model, params = vitjax.load_checkpoint(path)
    assert model.config.resnet_layers == (3, 4, 9) and model.config.grid == (24, 24)
    ref = timm_model(model.config, path)
    _compare(model, params, ref, _images(384, rng)[:1], first_layer_tol=None)


def test_b32_with_pre_logits_and_21k_head(make_checkpoint, rng):
    path = make_checkpoint("ViT-B_32", representation_size=768, num_classes=21843)
    model, params = vitjax.load_checkpoint(path)
    assert model.config.representation_size == 768 and model.config.num_classes == 21843
    ref = timm_model(model.config, path)  # timm drops pre_logits: compare the features before it
    images = _images(224, rng)
    _, ref_features, ref_attention = timm_forward(ref, images)
    logits, state = model.apply({"params": params}, images, mutable=["intermediates"])
    features = np.asarray(state["intermediates"]["features"][0])
    assert np.abs(features - ref_features).max() <= 1e-4 * max(1.0, float(np.abs(ref_features).max()))
    with np.load(path) as f:  # the reference's pre_logits + head, applied to timm's features
        ref_logits = np.tanh(ref_features @ f["pre_logits/kernel"] + f["pre_logits/bias"])
        ref_logits = ref_logits @ f["head/kernel"] + f["head/bias"]
    assert np.abs(np.asarray(logits) - ref_logits).max() <= 1e-4 * max(1.0, float(np.abs(ref_logits).max()))
    _, attention = vitjax.forward(model, params, images)
    per_layer = np.abs(np.asarray(attention) - ref_attention).max(axis=(0, 2, 3, 4))
    assert per_layer[0] <= 1e-5 and per_layer.max() <= 1e-4, per_layer


def test_exact_gelu_mode_matches_timm_default(make_checkpoint, rng):
    path = make_checkpoint("ViT-S_16", num_layers=4)
    images = _images(224, rng)
    ref = timm_model(vitjax.get_config("ViT-S_16", num_layers=4), path, act_layer=None)  # nn.GELU (erf)
    exact_model, params = vitjax.load_checkpoint(path, gelu_approximate=False)
    assert exact_model.config.gelu_approximate is False
    ref_logits = _compare(exact_model, params, ref, images, first_layer_tol=1e-5)
    # and the tanh default measurably differs from timm's default, so the test has teeth
    tanh_model, _ = vitjax.load_checkpoint(path)
    tanh_logits = np.asarray(vitjax.predict(tanh_model, params, images))
    assert np.abs(tanh_logits - ref_logits).max() > 1e-4 * max(1.0, float(np.abs(ref_logits).max()))
