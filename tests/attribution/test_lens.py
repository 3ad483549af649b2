"""The logit lens, the feature lens and direct logit attribution (vitjax.attribution.lens)."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from support.helpers import EPS32, rounding_tol
from support.tiny_models import tiny_model as _model

import vitjax
from vitjax.attribution.hooks import run_with_cache
from vitjax.attribution.lens import direct_logit_attribution, feature_lens, logit_lens, readout
from vitjax.errors import NonFiniteError


@pytest.mark.parametrize("overrides", [dict(num_registers=2), dict(classifier="gap", layer_scale=True),
                                       dict(representation_size=5)], ids=["registers", "gap", "pre_logits"])
def test_the_logit_lens_at_the_last_layer_is_the_model(overrides):
    model, params, x = _model(num_layers=3, **overrides)
    lens = logit_lens(model, params, x)
    out = vitjax.predict(model, params, x)
    assert lens["logits"].shape == (2, 4, 7) and lens["maps"].shape == (2, 4, 2, 2)
    np.testing.assert_array_equal(lens["logits"][:, -1], out)  # exactly
    np.testing.assert_array_equal(lens["target"], jnp.argmax(out, axis=-1))
    # the readout the other rows use is the model's own tail: on the last block's output it gives the logits
    _, cache = run_with_cache(model, params, x, names=lambda n: "resid" in n)
    tail = readout(model, params, cache["resid_post", 2])
    np.testing.assert_allclose(tail, out, atol=rounding_tol(float(jnp.abs(out).max()), steps=4, fan_in=16))
    for row, name in enumerate(["blocks.0.hook_resid_pre", "blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]):
        np.testing.assert_allclose(lens["logits"][:, row], readout(model, params, cache[name]), rtol=0,
                                   atol=rounding_tol(float(jnp.abs(lens["logits"][:, row]).max()), steps=4, fan_in=16))


def test_the_patch_lens_reads_each_patch_as_the_head_reads_the_pooled_token():
    # GAP without pre_logits: the head is linear after the per-token norm, so the mean over the patches
    # of each patch's target logit is the lens logit of the target
    model, params, x = _model(num_layers=2, classifier="gap")
    lens = logit_lens(model, params, x, target=3)
    assert lens["target"].tolist() == [3, 3]
    mean = lens["maps"].mean(axis=(2, 3))
    np.testing.assert_allclose(mean, lens["logits"][:, :, 3], atol=rounding_tol(float(jnp.abs(mean).max()), 4, 16))


def test_headless_models_get_the_feature_lens_and_a_one_line_error_for_logits():
    model, params, x = _model(num_layers=3, num_classes=None, num_registers=1, layer_scale=True)
    with pytest.raises(ValueError, match=re.escape("use vitjax.feature_lens")) as e:
        logit_lens(model, params, x)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="classification head"):
        direct_logit_attribution(model, params, x)
    cos = feature_lens(model, params, x)
    assert cos.shape == (2, 4) and float(jnp.abs(cos).max()) <= 1 + 4 * EPS32
    np.testing.assert_allclose(cos[:, -1], 1.0, atol=rounding_tol(1.0, steps=3, fan_in=16))
    # the features the lens compares are the model's output (class token after the final norm)
    _, cache = run_with_cache(model, params, x, names=["blocks.1.hook_resid_post"])
    out = vitjax.predict(model, params, x)
    f = readout(model, params, cache["resid_post", 1])
    want = jnp.sum(f * out, -1) / jnp.linalg.norm(f, axis=-1) / jnp.linalg.norm(out, axis=-1)
    np.testing.assert_allclose(cos[:, 2], want, atol=rounding_tol(1.0, steps=4, fan_in=16))


@pytest.mark.parametrize("overrides", [dict(num_registers=1), dict(classifier="gap", layer_scale=True)],
                         ids=["class-token", "gap-layerscale"])
def test_direct_logit_attribution_parts_sum_to_the_logit_minus_the_biases(overrides):
    model, params, x = _model(num_layers=3, **overrides)
    dla = direct_logit_attribution(model, params, x, target=np.array([1, 5]))
    assert dla["heads"].shape == (2, 3, 4) and dla["mlps"].shape == (2, 3) and dla["embed"].shape == (2,)
    out = vitjax.predict(model, params, x)
    np.testing.assert_array_equal(dla["logit"], out[np.arange(2), np.array([1, 5])])
    parts = dla["embed"] + dla["heads"].sum(axis=(1, 2)) + dla["mlps"].sum(axis=1)
    # float32: the parts are about L (H + 2) terms of size |part| each through a norm and a D-long dot product
    scale = float(max(jnp.abs(dla["heads"]).max(), jnp.abs(dla["mlps"]).max(), jnp.abs(dla["embed"]).max()))
    tol = rounding_tol(scale, steps=3 * (4 + 2) + 4, fan_in=16)
    np.testing.assert_allclose(parts, dla["logit"] - dla["bias"], atol=tol)
    assert float(jnp.abs(dla["heads"]).max()) > 100 * tol  # the check is not trivially small


def test_direct_logit_attribution_of_a_head_is_its_output_read_by_the_frozen_norm():
    model, params, x = _model(num_layers=2)
    dla = direct_logit_attribution(model, params, x)
    _, cache = run_with_cache(model, params, x, names=["blocks.1.attn.hook_z", "blocks.1.hook_resid_post"])
    final = cache["resid_post", 1][:, 0]
    sigma = jnp.sqrt(final.var(-1) + model.config.layer_norm_eps)
    w_o = params["Transformer"]["encoderblock_1"]["MultiHeadDotProductAttention_1"]["out"]["kernel"][2]  # [d, D]
    comp = cache["z", 1][:, 0, 2] @ w_o  # head 2's output at the class token
    comp = comp - comp.mean(-1, keepdims=True)
    ln = params["Transformer"]["encoder_norm"]["scale"]
    u = params["head"]["kernel"][:, dla["target"]].T * ln[None]
    want = jnp.sum(comp / sigma[:, None] * u, -1)
    np.testing.assert_allclose(dla["heads"][:, 1, 2], want, atol=rounding_tol(float(jnp.abs(want).max()), 4, 16))


def test_lens_errors_are_one_line():
    model, params, x = _model(representation_size=5)
    with pytest.raises(ValueError, match="pre_logits"):
        direct_logit_attribution(model, params, x)
    model, params, x = _model()
    for bad, text in ((7, "in \\[0, 6\\]"), (np.array([1.5, 2]), "dtype"), (np.array([1, 2, 3]), "shape")):
        with pytest.raises(ValueError, match=text):
            logit_lens(model, params, x, target=bad)
    with pytest.raises(ValueError, match="expects"):
        feature_lens(model, params, jnp.zeros((1, 48, 48, 3)))


def test_the_lens_is_differentiable():
    model, params, x = _model()
    g = jax.grad(lambda y: logit_lens(model, params, y, target=2)["logits"][:, 1, 2].sum())(x)
    assert g.shape == x.shape and float(jnp.abs(g).max()) > 0


def _nan_first_block(params):
    """Finite weights, NaN outputs: block 0's first LayerNorm scaled by 1e30 overflows the attention logits."""
    params = jax.tree_util.tree_map(lambda a: a, params)  # a copy of the tree (the arrays are immutable)
    ln = params["Transformer"]["encoderblock_0"]["LayerNorm_0"]
    params["Transformer"]["encoderblock_0"]["LayerNorm_0"] = {**ln, "scale": jnp.full_like(ln["scale"], 1e30)}
    return params


@pytest.mark.parametrize("fn", ["logit_lens", "feature_lens", "direct_logit_attribution"])
def test_the_lenses_raise_non_finite_error_on_a_nan_model_never_return_nan(fn):
    """Before: ``logit_lens`` (fuzz case nonfinite-lib-logit_lens), ``feature_lens`` and ``direct_logit_attribution``
    returned NaN arrays without an error, unlike every other analysis function."""
    model, params, x = _model(num_layers=2)
    call = {"logit_lens": logit_lens, "feature_lens": feature_lens,
            "direct_logit_attribution": direct_logit_attribution}
    with pytest.raises(NonFiniteError) as e:
        call[fn](model, _nan_first_block(params), x)
    text = str(e.value)
    assert "\n" not in text and "not finite" in text and e.value.rows == (0, 1)
    leaves = jax.tree_util.tree_leaves(e.value.result)
    assert leaves and any(not np.isfinite(np.asarray(a)).all() for a in leaves if np.asarray(a).dtype.kind == "f")
    call[fn](model, params, x)  # the same model with finite outputs: no error


def test_the_lens_checks_only_valid_rows_and_names_the_bad_one():
    model, params, x = _model(num_layers=2)
    x = x.at[1].set(jnp.nan)  # image 1 is NaN, image 0 is fine
    with pytest.raises(NonFiniteError) as e:
        logit_lens(model, params, x)
    assert e.value.rows == (1,) and e.value.what[1][0] == "logits"
    logits = np.asarray(e.value.result["logits"])
    assert np.isfinite(logits[0]).all() and not np.isfinite(logits[1]).all()  # row 0 usable as it is
    lens = logit_lens(model, params, x, valid=np.array([True, False]))  # row 1 is padding: not checked
    assert np.isfinite(np.asarray(lens["logits"][0])).all()
    assert np.isfinite(np.asarray(feature_lens(model, params, x, valid=np.array([True, False]))[0])).all()
