"""Activations by name and interventions (vitjax.attribution.hooks): names, shapes, the lowered program, exactness.

Parity with timm and transformers is in test_hooks_reference.py; here everything is vitjax against itself.
Tolerances are float32 rounding (support.helpers.rounding_tol); "exactly" means bit for bit.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from support.helpers import rounding_tol
from support.tiny_models import tiny_model as _model

import vitjax
from vitjax.attribution import hooks as H
from vitjax.attribution.hooks import BLOCK_SITES, ablate_heads, hooked, patch_from, run_with_cache, run_with_hooks
from vitjax.errors import NonFiniteError
from vitjax.model.forward import finite_rows

FULL = dict(num_registers=2, layer_scale=True, representation_size=5)


def test_every_site_is_named_as_transformer_lens_with_its_shape():
    model, params, x = _model(**FULL)
    c = model.config
    out, cache = run_with_cache(model, params, x)
    b, n, d, h, m = 2, c.num_tokens, 16, 4, 24
    assert list(cache) == list(H.site_names(c))  # forward order
    assert len(cache) == 2 * len(BLOCK_SITES) + 2
    want = {"hook_resid_pre": (b, n, d), "ln1.hook_normalized": (b, n, d), "attn.hook_q": (b, n, h, d // h),
            "attn.hook_k": (b, n, h, d // h), "attn.hook_v": (b, n, h, d // h), "attn.hook_attn_scores": (b, h, n, n),
            "attn.hook_pattern": (b, h, n, n), "attn.hook_z": (b, n, h, d // h), "hook_attn_out": (b, n, d),
            "hook_resid_mid": (b, n, d), "ln2.hook_normalized": (b, n, d), "mlp.hook_pre": (b, n, m),
            "mlp.hook_post": (b, n, m), "hook_mlp_out": (b, n, d), "hook_resid_post": (b, n, d)}
    for layer in range(2):
        for site, shape in want.items():
            assert cache[f"blocks.{layer}.{site}"].shape == shape, site
    assert cache["ln_final.hook_normalized"].shape == (b, n, d)
    assert cache["hook_pre_logits"].shape == (b, 5) and out.shape == (b, 7)
    # TransformerLens' short keys and the stack of one site over layers
    assert cache["pattern", 1] is cache["blocks.1.attn.hook_pattern"]
    assert cache["normalized", 0, "ln2"] is cache["blocks.0.ln2.hook_normalized"]
    assert cache["normalized"] is cache["ln_final.hook_normalized"]
    assert cache["embed"] is cache["blocks.0.hook_resid_pre"]  # TransformerLens' hook_embed (its ViT bridge)
    assert cache.stack("resid_post").shape == (b, 2, n, d)


def test_the_values_are_what_their_names_say():
    model, params, x = _model(**FULL)
    _, cache = run_with_cache(model, params, x)
    p = params["Transformer"]["encoderblock_1"]
    eps = model.config.layer_norm_eps
    pre = cache["resid_pre", 1]
    tol = rounding_tol(float(jnp.abs(pre).max()), steps=6, fan_in=24)
    np.testing.assert_array_equal(pre, cache["resid_post", 0])
    mu, var = pre.mean(-1, keepdims=True), pre.var(-1, keepdims=True)
    np.testing.assert_allclose(cache["normalized", 1, "ln1"], (pre - mu) / jnp.sqrt(var + eps), atol=1e-5)
    scores = jnp.einsum("bqhd,bkhd->bhqk", cache["q", 1], cache["k", 1]) / 2.0  # sqrt(d_head = 4)
    np.testing.assert_allclose(cache["attn_scores", 1], scores, atol=rounding_tol(float(jnp.abs(scores).max()), 3, 4))
    np.testing.assert_allclose(cache["pattern", 1], jax.nn.softmax(cache["attn_scores", 1], axis=-1), atol=1e-6)
    np.testing.assert_allclose(cache["z", 1], jnp.einsum("bhqk,bkhd->bqhd", cache["pattern", 1], cache["v", 1]),
                               atol=tol)
    np.testing.assert_allclose(cache["resid_mid", 1], pre + cache["attn_out", 1], atol=tol)
    np.testing.assert_allclose(cache["post", 1], jax.nn.gelu(cache["pre", 1], approximate=True), atol=tol)
    np.testing.assert_allclose(cache["resid_post", 1], cache["resid_mid", 1] + cache["mlp_out", 1], atol=tol)
    out_proj = jnp.einsum("bnhe,hed->bnd", cache["z", 1], p["MultiHeadDotProductAttention_1"]["out"]["kernel"])
    bias = p["MultiHeadDotProductAttention_1"]["out"]["bias"]
    attn_out = (out_proj + bias[None, None]) * p["ls1"]["scale"][None, None]
    np.testing.assert_allclose(cache["attn_out", 1], attn_out, atol=tol)


def test_asking_for_nothing_adds_nothing_to_the_lowered_program():
    model, params, x = _model()
    static, arrays = H._split({})

    def text(lowered):
        return re.sub(r"module @\S+", "module @m", lowered.as_text())

    nothing = text(H._run.lower(model, params, x, arrays, names=(), static=static))

    def forward_and_flag(p, y):  # the plain forward pass and its one finite flag per image, as vitjax.predict
        out = model.apply({"params": p}, y)
        return out, {}, {"logits": finite_rows(out)}

    plain = text(jax.jit(forward_and_flag).lower(params, x))
    assert nothing == plain
    one = H._run.lower(model, params, x, arrays, names=("blocks.0.attn.hook_pattern",), static=static)
    assert len(jax.tree_util.tree_leaves(one.out_info)) == 3  # the output, its flag and the one site asked for
    out, cache = run_with_cache(model, params, x, names=())
    assert cache == {} and out.shape == (2, 7)


def test_name_filters_names_lists_and_predicates():
    model, params, x = _model()
    _, cache = run_with_cache(model, params, x, names=lambda n: n.endswith("hook_pattern"))
    assert list(cache) == ["blocks.0.attn.hook_pattern", "blocks.1.attn.hook_pattern"]
    _, cache = run_with_cache(model, params, x, names=[("z", 1), "blocks.0.hook_resid_post"])
    assert list(cache) == ["blocks.0.hook_resid_post", "blocks.1.attn.hook_z"]  # forward order
    _, cache = run_with_cache(model, params, x, names=("pattern", 0))
    assert list(cache) == ["blocks.0.attn.hook_pattern"]


def test_the_pattern_is_the_attention_vitjax_returns():
    model, params, x = _model(num_registers=1)
    out, cache = run_with_cache(model, params, x, names=lambda n: "pattern" in n)
    logits, attention = vitjax.forward(model, params, x)
    np.testing.assert_array_equal(out, logits)
    for layer in range(2):
        np.testing.assert_array_equal(cache["pattern", layer], attention[:, layer])


@pytest.mark.parametrize("overrides", [FULL, dict(classifier="gap")], ids=["registers-layerscale-prelogits", "gap"])
def test_patching_every_site_from_the_clean_run_reproduces_the_clean_output_exactly(overrides):
    model, params, x = _model(**overrides)
    clean, cache = run_with_cache(model, params, x)
    patched = run_with_hooks(model, params, x, patch_from(cache))
    np.testing.assert_array_equal(patched, clean)
    # an identity hook on every site leaves the bits alone too
    np.testing.assert_array_equal(run_with_hooks(model, params, x, {lambda n: True: lambda v, hook: v}), clean)


def test_patching_changes_what_follows_and_only_that():
    model, params, x = _model()
    _, other = run_with_cache(model, params, x[::-1], names=["blocks.1.hook_resid_pre"])
    clean = run_with_hooks(model, params, x, [])
    # block 1's input from the other image: the output is the other image's
    np.testing.assert_array_equal(run_with_hooks(model, params, x, patch_from(other)), clean[::-1])
    # patching a single image of batch 1 broadcasts to the batch
    one = {"blocks.1.hook_resid_pre": other["blocks.1.hook_resid_pre"][:1]}
    out = run_with_hooks(model, params, x, patch_from(one))
    np.testing.assert_array_equal(out[0], out[1])


def test_a_new_patch_source_does_not_recompile():
    model, params, x = _model()
    _, a = run_with_cache(model, params, x, names=["blocks.0.hook_resid_post"])
    _, b = run_with_cache(model, params, x[::-1], names=["blocks.0.hook_resid_post"])
    run_with_hooks(model, params, x, patch_from(a))
    size = H._run._cache_size()
    run_with_hooks(model, params, x, patch_from(b))
    run_with_hooks(model, params, x, H.scale_heads({0: 1}, 0.5))
    assert H._run._cache_size() == size + 1  # the scale's new structure compiles once; the second patch did not


def test_zero_and_mean_ablation_and_head_scaling():
    model, params, x = _model(batch=3)
    clean, cache = run_with_cache(model, params, x, names=["blocks.1.attn.hook_z"])
    zero_hook = {"blocks.1.attn.hook_z": lambda z, hook: z.at[:, :, 2].set(0.0)}
    zero = run_with_hooks(model, params, x, ablate_heads({1: 2}))
    np.testing.assert_array_equal(zero, run_with_hooks(model, params, x, zero_hook))
    assert float(jnp.abs(zero - clean).max()) > 1e-3
    mean = cache["z", 1].mean(axis=0)
    mean_hook = {"blocks.1.attn.hook_z":
                 lambda z, hook: z.at[:, :, 2].set(jnp.broadcast_to(mean[:, 2], z[:, :, 2].shape))}
    want = run_with_hooks(model, params, x, mean_hook)
    np.testing.assert_array_equal(run_with_hooks(model, params, x, ablate_heads({1: [2]}, "mean")), want)
    np.testing.assert_array_equal(run_with_hooks(model, params, x, ablate_heads({1: 2}, "mean", cache=cache)), want)
    # scaling a head's attention by 0 silences it as zero ablation does (z = pattern @ v)
    scaled = run_with_hooks(model, params, x, H.scale_heads({1: 2}, 0.0))
    np.testing.assert_allclose(scaled, zero, atol=rounding_tol(float(jnp.abs(zero).max()), steps=8, fan_in=24))
    same = run_with_hooks(model, params, x, H.scale_heads({1: 2}, 1.0))
    np.testing.assert_array_equal(same, clean)


def test_hooks_compose_with_maps_and_every_other_tool():
    model, params, x = _model()
    hooks = ablate_heads({0: [0, 1]}) + H.scale_heads({1: 3}, 0.5)
    ablated = hooked(model, hooks)
    assert isinstance(ablated, vitjax.ViT) and hash(ablated) == hash(ablated)
    maps = vitjax.compute_maps(ablated, params, x)
    out, cache = run_with_cache(model, params, x, names=lambda n: "pattern" in n, hooks=hooks)
    tol = rounding_tol(float(jnp.abs(out).max()), steps=8, fan_in=24)
    np.testing.assert_allclose(maps["logits"], out, atol=tol)
    _, attention = vitjax.forward(ablated, params, x)
    _, clean_attention = vitjax.forward(model, params, x)
    np.testing.assert_array_equal(attention[:, 0], clean_attention[:, 0])  # ablating z leaves its own pattern
    np.testing.assert_allclose(attention[:, 1], cache["pattern", 1], atol=rounding_tol(1.0, steps=8, fan_in=24))
    np.testing.assert_allclose(attention[:, 1, 3].sum(-1), 0.5, rtol=1e-6)  # the scaled head's rows sum to 0.5
    assert float(jnp.abs(attention[:, 1] - clean_attention[:, 1]).max()) > 1e-3  # layer 0's ablation shows


def test_gradients_flow_through_hooks():
    model, params, x = _model()
    from vitjax.attribution.lens import readout

    _, cache = run_with_cache(model, params, x, names=["blocks.1.hook_resid_post"])
    last = cache["resid_post", 1]

    def logit(src):  # the output as a function of the patched last block output
        return run_with_hooks(model, params, x, patch_from({"blocks.1.hook_resid_post": src}))[:, 3].sum()

    grad = jax.grad(logit)(last)
    want = jax.grad(lambda t: readout(model, params, t)[:, 3].sum())(last)
    assert float(jnp.abs(grad).max()) > 0
    np.testing.assert_allclose(grad, want, atol=rounding_tol(float(jnp.abs(want).max()), steps=6, fan_in=16))
    # and through a hook function's own argument: d out / d scale of a head at scale 1
    g = jax.grad(lambda s: run_with_hooks(model, params, x, H.scale_heads({1: 0}, s))[:, 3].sum())(1.0)
    eps = 1e-2
    fd = (run_with_hooks(model, params, x, H.scale_heads({1: 0}, 1 + eps))[:, 3].sum()
          - run_with_hooks(model, params, x, H.scale_heads({1: 0}, 1 - eps))[:, 3].sum()) / (2 * eps)
    assert abs(float(g) - float(fd)) <= 1e-2 * max(1.0, abs(float(fd)))


def test_hybrid_models_have_every_site_after_the_stem():
    model, params, x = _model(resnet_layers=(1,), patch_size=1, image_size=32, num_layers=1)
    assert model.config.grid == (8, 8)
    out, cache = run_with_cache(model, params, x)
    assert cache["resid_pre", 0].shape == (2, 65, 16) and len(cache) == len(BLOCK_SITES) + 1
    np.testing.assert_array_equal(run_with_hooks(model, params, x, patch_from(cache)), out)


def test_bad_names_hooks_and_interventions_are_one_line_errors():
    model, params, x = _model()
    cases = [
        (lambda: run_with_cache(model, params, x, names=["blocks.0.attn.hook_patern"]),
         "did you mean 'blocks.0.attn.hook_pattern'"),
        (lambda: run_with_cache(model, params, x, names=[("pattern", 5)]), "layers 0..1"),
        (lambda: run_with_hooks(model, params, x, {"blocks.0.hook_resid_post": 3}), "not callable"),
        (lambda: run_with_hooks(model, params, x, {"blocks.0.hook_resid_post": lambda v, h: v[:, :1]}),
         "returned shape"),
        (lambda: run_with_hooks(model, params, x, ablate_heads({0: 9})), "head 9 out of range"),
        (lambda: ablate_heads({0: -1}), "integers >= 0"),
        (lambda: ablate_heads({0: 1}, "median"), "mode must be"),
        (lambda: ablate_heads({1: 1}, "mean", cache={}), "has no blocks.1.attn.hook_z"),
        (lambda: patch_from({"blocks.0.hook_resid_post": x}, names="blocks.1.hook_resid_post"), "not in the cache"),
        (lambda: run_with_hooks(model, params, x, patch_from({"blocks.0.hook_resid_post": x})), "the patch has shape"),
        (lambda: H.scale_heads({0: 1}, [1.0, 2.0]), "factor must be a number"),
        (lambda: H.site_name("pattern"), "needs a layer"),
        (lambda: H.site_name("scale", 0, "ln1"), "no activation 'scale' in vitjax"),  # TransformerLens has it
        (lambda: H.site_name("mlp_in", 1), "no activation 'mlp_in'"),
        (lambda: H.site_name("pattern", 1.9), "layer must be an integer >= 0"),  # was silently layer 1
        (lambda: H.site_name("pattern", True), "layer must be an integer >= 0"),
        (lambda: H.site_name("normalized", -1, "ln1"), "layer must be an integer >= 0 (0-based), got -1"),
    ]
    for fn, text in cases:
        with pytest.raises(ValueError, match=re.escape(text)) as e:
            fn()
        assert "\n" not in str(e.value)
    with pytest.raises(KeyError, match="did you mean"):
        run_with_cache(model, params, x, names=["blocks.0.attn.hook_z"])[1]["blocks.0.attn.hook_q"]


def _nan_first_block(params):
    """Finite weights, NaN outputs: block 0's first LayerNorm scaled by 1e30 overflows the attention logits."""
    params = jax.tree_util.tree_map(lambda a: a, params)
    ln = params["Transformer"]["encoderblock_0"]["LayerNorm_0"]
    params["Transformer"]["encoderblock_0"]["LayerNorm_0"] = {**ln, "scale": jnp.full_like(ln["scale"], 1e30)}
    return params


def test_run_with_cache_and_run_with_hooks_raise_non_finite_error_on_a_nan_model():
    """Before: both returned NaN outputs without an error (fuzz case nonfinite-lib-run_with_cache)."""
    model, params, x = _model()
    bad = _nan_first_block(params)
    with pytest.raises(NonFiniteError) as e:
        run_with_cache(model, bad, x, names=("pattern", 0))
    assert "\n" not in str(e.value) and e.value.rows == (0, 1) and e.value.what[0] == ("logits",)
    out, cache = e.value.result  # what it would have returned, for whoever wants to look
    assert out.shape == (2, 7) and list(cache) == ["blocks.0.attn.hook_pattern"]
    assert not np.isfinite(np.asarray(out)).any()
    with pytest.raises(NonFiniteError) as e:
        run_with_hooks(model, bad, x, ablate_heads({1: 0}))
    assert e.value.rows == (0, 1) and e.value.result.shape == (2, 7)
    headless, hp, hx = _model(num_classes=None)
    with pytest.raises(NonFiniteError, match="features"):
        run_with_cache(headless, _nan_first_block(hp), hx, names=())


def test_an_intervention_that_makes_the_output_nan_or_inf_raises_with_the_result_attached():
    model, params, x = _model()

    def poison(value, hook):  # image 1 only
        return value.at[1].set(jnp.inf)

    for hooks in ({"blocks.1.hook_resid_post": poison}, H.scale_heads({0: 1}, jnp.inf)):
        with pytest.raises(NonFiniteError) as e:
            run_with_hooks(model, params, x, hooks)
        assert e.value.rows in ((1,), (0, 1))
        with pytest.raises(NonFiniteError):
            run_with_cache(model, params, x, names=(), hooks=hooks)
    with pytest.raises(NonFiniteError) as e:
        run_with_hooks(model, params, x, {"blocks.1.hook_resid_post": poison})
    assert e.value.rows == (1,)
    np.testing.assert_array_equal(e.value.result[0], run_with_hooks(model, params, x, {})[0])  # row 0 untouched
    out = run_with_hooks(model, params, x, {"blocks.1.hook_resid_post": poison}, valid=np.array([True, False]))
    assert np.isfinite(np.asarray(out[0])).all()  # row 1 is padding: not checked
