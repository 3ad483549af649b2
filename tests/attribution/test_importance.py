"""Head importance as one compiled program (vitjax.attribution.importance) against ablated forward passes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from support.helpers import rounding_tol
from support.tiny_models import tiny_model as _model

import vitjax
from vitjax.attribution.hooks import ablate_heads, run_with_hooks
from vitjax.attribution.importance import ablation_bytes, chunk_size, head_importance
from vitjax.errors import NonFiniteError


def _reference(model, params, x, mode, target=None):
    """``[B, L, H]``: a loop of ablated forward passes minus the clean one (logit, or feature cosine - 1)."""
    c = model.config
    clean = vitjax.predict(model, params, x)
    cls = jnp.argmax(clean, axis=-1) if target is None else jnp.full((x.shape[0],), target)
    out = np.zeros((x.shape[0], c.num_layers, c.num_heads), np.float32)
    for layer in range(c.num_layers):
        for head in range(c.num_heads):
            o = run_with_hooks(model, params, x, ablate_heads({layer: head}, mode))
            if c.num_classes:
                out[:, layer, head] = o[jnp.arange(len(cls)), cls] - clean[jnp.arange(len(cls)), cls]
            else:
                cos = jnp.sum(o * clean, -1) / jnp.linalg.norm(o, axis=-1) / jnp.linalg.norm(clean, axis=-1)
                out[:, layer, head] = cos - 1
    return out, float(jnp.abs(clean).max())


@pytest.mark.parametrize("mode", ["zero", "mean"])
@pytest.mark.parametrize("budget", [2**30, 1], ids=["one-chunk", "one-head-per-chunk"])
def test_each_head_equals_the_ablated_forward_pass_minus_the_clean_one(mode, budget):
    model, params, x = _model(num_layers=3, num_heads=4, num_registers=1, layer_scale=True)
    imp = head_importance(model, params, x, mode=mode, budget=budget)
    ref, scale = _reference(model, params, x, mode)
    assert imp.shape == (2, 3, 4) and float(np.abs(ref).max()) > 1e-2
    np.testing.assert_allclose(imp, ref, rtol=0, atol=rounding_tol(scale, steps=2 * 3 * 4, fan_in=24))


def test_a_given_target_and_a_headless_model():
    model, params, x = _model(num_layers=2, num_heads=4)
    imp = head_importance(model, params, x, target=5)
    ref, scale = _reference(model, params, x, "zero", target=5)
    np.testing.assert_allclose(imp, ref, atol=rounding_tol(scale, steps=16, fan_in=24))
    model, params, x = _model(num_layers=2, num_heads=4, num_classes=None, classifier="gap")
    imp = head_importance(model, params, x)
    ref, _ = _reference(model, params, x, "zero")
    assert float(imp.max()) <= 1e-6 and float(imp.min()) < -1e-4  # cosine - 1 <= 0
    np.testing.assert_allclose(imp, ref, atol=rounding_tol(1.0, steps=16, fan_in=24))


@pytest.mark.parametrize("overrides", [
    dict(num_layers=1, num_heads=2),  # only the last block: its class-token row alone
    dict(num_layers=3, num_classes=None, num_registers=2, layer_scale=True),  # DINOv2-like: features of the CLS
    dict(num_layers=3, representation_size=12),  # pre_logits + tanh before the head
    dict(num_layers=3, classifier="gap"),  # the readout reads every patch: the last block in full
], ids=["one-layer", "headless-cls-registers", "pre-logits", "gap-head"])
def test_every_readout_equals_the_loop(overrides):
    """The shortened last block (class-token row only) and the reused prefix, on each kind of readout."""
    model, params, x = _model(**overrides)
    c = model.config
    imp = head_importance(model, params, x)
    ref, scale = _reference(model, params, x, "zero")
    assert imp.shape == (2, c.num_layers, c.num_heads) and float(np.abs(ref).max()) > 1e-4
    scale = scale if c.num_classes else 1.0
    np.testing.assert_allclose(imp, ref, rtol=0, atol=rounding_tol(scale, steps=2 * c.num_layers * 4, fan_in=24))


def test_non_finite_output_is_an_error():
    model, params, x = _model(num_layers=2)
    bad = jax.tree_util.tree_map(lambda a: a, params)
    bad["head"]["bias"] = bad["head"]["bias"].at[0].set(jnp.nan)  # every logit of class 0 NaN
    with pytest.raises(NonFiniteError, match="image\\(s\\) 0, 1 of this batch of 2") as e:
        head_importance(model, bad, x, target=1)
    assert "\n" not in str(e.value) and e.value.result.shape == (2, 2, 4)


def test_chunks_fit_the_budget():
    config = vitjax.get_config("ViT-B_16")
    per = ablation_bytes(config, 8)
    assert per == 4 * 8 * (8 * 197 * 768 + 2 * 197 * 3072 + 3 * 12 * 197 * 197)
    assert chunk_size(config, 8, 12 * per, platform="gpu") == 12
    assert chunk_size(config, 8, 7 * per, platform="gpu") == 6  # two balanced chunks of 6, not 7 + 5
    assert chunk_size(config, 8, 5 * per, platform="gpu") == 4
    assert chunk_size(config, 8, 1, platform="gpu") == 1
    for budget in (per, 3 * per, 11 * per):
        assert chunk_size(config, 8, budget, platform="gpu") * per <= budget
    # on CPU, at most CPU_IMAGES images per block (ablations x batch), within the budget too
    assert chunk_size(config, 8, 12 * per, platform="cpu") == 1
    assert chunk_size(config, 2, 2**40, platform="cpu") == 4
    assert chunk_size(config, 1, 3 * ablation_bytes(config, 1), platform="cpu") == 3


def test_bad_settings_are_one_line_errors():
    model, params, x = _model(num_layers=1)
    for kw, text in ((dict(mode="max"), "mode must be"), (dict(budget=0), "budget must be"),
                     (dict(budget=1.5), "budget must be"), (dict(target=9), "in \\[0, 6\\]"),
                     (dict(target=10**20), "in \\[0, 6\\], got 100000000000000000000")):
        with pytest.raises(ValueError, match=text) as e:
            head_importance(model, params, x, **kw)
        assert "\n" not in str(e.value)
    # an empty batch, and a mean over one image (the image itself: nothing would be ablated)
    for images, kw, text in ((x[:0], {}, "at least one image"), (x[:1], dict(mode="mean"), "needs at least 2 images")):
        with pytest.raises(ValueError, match=text) as e:
            head_importance(model, params, images, **kw)
        assert "\n" not in str(e.value)
    headless, p2, _ = _model(num_layers=1, num_classes=None)
    with pytest.raises(ValueError, match="target must be None"):
        head_importance(headless, p2, x, target=1)
