import jax
import jax.numpy as jnp
import numpy as np
import pytest
from support.helpers import rounding_tol

import vitjax
from vitjax.model.forward import collect_attention

SMALL_HYBRID = dict(resnet_layers=(1, 1), hidden_size=64, mlp_dim=64, num_heads=4, num_layers=2,
                    image_size=64)


def _init(config, batch=2):
    model = vitjax.ViT(config)
    h, w = config.image_size
    x = jax.random.uniform(jax.random.PRNGKey(1), (batch, h, w, 3), minval=-1, maxval=1)
    variables = jax.jit(model.init)(jax.random.PRNGKey(0), x)  # jitted: eager dispatch is slow
    return model, {"params": variables["params"]}, x


@pytest.mark.parametrize(
    "variant,overrides",
    [
        ("testing", {}),
        ("testing", {"num_layers": 3, "image_size": (48, 80)}),
        ("testing", {"classifier": "gap", "num_layers": 2}),
        ("R50+ViT-B_16", SMALL_HYBRID),
    ],
)
def test_attention_is_sown_with_right_shape(variant, overrides):
    config = vitjax.get_config(variant, **overrides)
    model, variables, x = _init(config)
    logits, state = jax.jit(lambda v, x: model.apply(v, x, mutable=["intermediates"]))(variables, x)
    attn = collect_attention(state["intermediates"], config.num_layers)
    n = config.num_tokens
    assert attn.shape == (2, config.num_layers, config.num_heads, n, n)
    assert attn.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(attn).sum(-1), 1.0, atol=1e-5)
    assert logits.shape == (2, 1000)


def test_nothing_stored_without_intermediates():
    config = vitjax.get_config("testing", num_layers=2)
    model, variables, x = _init(config)
    out = model.apply(variables, x)
    assert isinstance(out, jax.Array) and out.shape == (2, 1000)
    # the traced program returns only the logits: no attention buffers are outputs
    jaxpr = jax.make_jaxpr(lambda v, x: model.apply(v, x))(variables, x)
    assert [tuple(a.aval.shape) for a in jaxpr.jaxpr.outvars] == [(2, 1000)]
    _, state = model.apply(variables, x, mutable=["intermediates"])
    assert "attention" in state["intermediates"]["Transformer"]["encoderblock_1"][
        "MultiHeadDotProductAttention_1"
    ]


def test_forward_logits_equal_plain_apply():
    config = vitjax.get_config("testing", num_layers=2)
    model, variables, x = _init(config)
    logits, attention = vitjax.forward(model, variables["params"], x)
    plain = np.asarray(model.apply(variables, x))
    # jitted and eager programs fuse (and so round) differently: a 2-layer model has ~9 rounding stages
    # per block, sums of up to N = 197 terms (measured 1.4e-6 on one EPYC, 2-core AMD saw the same).
    tol = rounding_tol(np.abs(plain).max(), steps=9 * 2 + 3, fan_in=197)
    assert np.abs(np.asarray(logits) - plain).max() <= tol
    assert np.abs(np.asarray(vitjax.predict(model, variables["params"], x)) - np.asarray(logits)).max() <= tol
    assert attention.shape == (2, 2, 2, 197, 197)


def test_attention_reachable_by_grad():
    config = vitjax.get_config("testing", num_layers=2)
    model = vitjax.ViT(config)
    x = jax.random.uniform(jax.random.PRNGKey(1), (2, 224, 224, 3), minval=-1, maxval=1)
    variables = jax.jit(model.init)(jax.random.PRNGKey(0), x)
    assert "perturbations" in variables

    @jax.jit
    def score(perturbations):
        logits = model.apply({"params": variables["params"], "perturbations": perturbations}, x)
        return logits[:, 3].sum()

    zeros = jax.tree_util.tree_map(jnp.zeros_like, variables["perturbations"])
    grads = jax.jit(jax.grad(score))(zeros)
    g = grads["Transformer"]["encoderblock_0"]["MultiHeadDotProductAttention_1"]["attention"]
    assert g.shape == (2, 2, 197, 197)
    assert float(jnp.abs(g).max()) > 0
    # finite-difference check of one entry of d score / d attention
    eps = 1e-2
    bumped = jax.tree_util.tree_map(jnp.zeros_like, zeros)
    layer = bumped["Transformer"]["encoderblock_1"]["MultiHeadDotProductAttention_1"]
    layer["attention"] = layer["attention"].at[0, 1, 0, 5].set(eps)
    fd = (score(bumped) - score(zeros)) / eps
    g1 = grads["Transformer"]["encoderblock_1"]["MultiHeadDotProductAttention_1"]["attention"]
    np.testing.assert_allclose(float(fd), float(g1[0, 1, 0, 5]), rtol=2e-2, atol=1e-4)


def test_pre_logits_and_headless():
    config = vitjax.get_config("testing", representation_size=7, num_classes=None)
    model, variables, x = _init(config)
    out, state = model.apply(variables, x, mutable=["intermediates"])
    assert out.shape == (2, 7)
    feats = state["intermediates"]["features"][0]
    assert feats.shape == (2, 10)
    np.testing.assert_allclose(
        np.asarray(out),
        np.tanh(np.asarray(feats) @ np.asarray(variables["params"]["pre_logits"]["kernel"])
                + np.asarray(variables["params"]["pre_logits"]["bias"])),
        atol=1e-5,
    )


def test_forward_rejects_wrong_image_size(tiny_checkpoint):
    model, params = vitjax.load_checkpoint(tiny_checkpoint)
    with pytest.raises(ValueError, match="224x224"):
        vitjax.forward(model, params, np.zeros((1, 200, 224, 3), np.float32))
    with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
        vitjax.forward(model, params, np.zeros((224, 224, 3), np.float32))
    # pixels not preprocessed (uint8 0..255), bool or complex: refused, never run as if they were floats
    for dtype in (np.uint8, np.int32, bool, np.complex64):
        with pytest.raises(ValueError, match=f"floating point, preprocessed .*got dtype {np.dtype(dtype)}"):
            vitjax.forward(model, params, np.zeros((1, 224, 224, 3), dtype))
    with pytest.raises(ValueError, match="an array \\[B, H, W, 3\\], got list"):
        vitjax.forward(model, params, np.zeros((1, 224, 224, 3), np.float32).tolist())


def test_bfloat16_compute_keeps_float32_probabilities(tiny_checkpoint):
    model, params = vitjax.load_checkpoint(tiny_checkpoint, dtype=jnp.bfloat16)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 224, 224, 3)).astype(np.float32)
    logits, attention = vitjax.forward(model, params, x)
    assert logits.dtype == jnp.float32 and attention.dtype == jnp.float32
    ref_model, _ = vitjax.load_checkpoint(tiny_checkpoint)
    ref_logits, _ = vitjax.forward(ref_model, params, x)
    assert np.abs(np.asarray(logits) - np.asarray(ref_logits)).max() > 0  # bfloat16 really was used


def test_registers_follow_the_class_token_without_position():
    """Token order [class, registers, patches]; the position embedding covers class + patches only."""
    config = vitjax.get_config("testing", num_layers=1, num_registers=3, layer_scale=True)
    model, variables, x = _init(config, batch=1)
    p = variables["params"]
    assert p["reg"].shape == (1, 3, 10)
    assert p["Transformer"]["posembed_input"]["pos_embedding"].shape == (1, 1 + 14 * 14, 10)
    assert p["Transformer"]["encoderblock_0"]["ls1"]["scale"].shape == (10,)
    assert config.num_prefix_tokens == 4 and config.num_tokens == 4 + 196
    seen = {}

    def capture(next_fun, args, kwargs, context):
        if isinstance(context.module, vitjax.model.vit.Encoder1DBlock) and context.method_name == "__call__":
            seen.setdefault("x", args[0])  # the first block's input (hook_point calls pass (name, value))
        return next_fun(*args, **kwargs)

    import flax.linen as nn

    with nn.intercept_methods(capture):
        model.apply(variables, x)
    tokens = np.asarray(seen["x"][0])  # the first block's input [N, D]
    pos = np.asarray(p["Transformer"]["posembed_input"]["pos_embedding"][0])
    np.testing.assert_array_equal(tokens[1:4], np.asarray(p["reg"][0]))  # registers: no position added
    np.testing.assert_allclose(tokens[0], np.asarray(p["cls"][0, 0]) + pos[0], rtol=0, atol=1e-7)
    _, attention = vitjax.forward(model, p, x)
    assert attention.shape == (1, 1, 2, 200, 200)
    maps = vitjax.compute_maps(model, p, x)
    assert maps["heads"].shape == (1, 1, 2, 14, 14) and maps["token_norms"].shape == (1, 14, 14)


def test_layer_scale_multiplies_each_branch():
    config = vitjax.get_config("testing", num_layers=1, layer_scale=True)
    model, variables, x = _init(config, batch=1)
    params = jax.tree_util.tree_map(lambda a: a, variables["params"])
    block = params["Transformer"]["encoderblock_0"]
    block["ls1"]["scale"] = jnp.zeros(10)
    block["ls2"]["scale"] = jnp.zeros(10)
    # both branches scaled to zero: the encoder output is LayerNorm(class token + its position)
    out, state = model.apply({"params": params}, x, mutable=["intermediates"])
    cls = params["cls"][0, 0] + params["Transformer"]["posembed_input"]["pos_embedding"][0, 0]
    norm = params["Transformer"]["encoder_norm"]
    mu, var = cls.mean(), ((cls - cls.mean()) ** 2).mean()
    want = (cls - mu) / jnp.sqrt(var + 1e-6) * norm["scale"] + norm["bias"]
    np.testing.assert_allclose(np.asarray(state["intermediates"]["features"][0][0]), np.asarray(want),
                               atol=rounding_tol(float(jnp.abs(want).max()), steps=4, fan_in=10))
    assert vitjax.get_config("ViT-S_16", layer_scale=True) != vitjax.get_config("ViT-S_16")


def test_import_vitjax_loads_no_torch():
    import subprocess
    import sys

    code = ("import pkgutil, importlib, sys, vitjax\n"
            "for m in pkgutil.walk_packages(vitjax.__path__, 'vitjax.'):\n"
            "    importlib.import_module(m.name)\n"
            "bad = sorted(k for k in sys.modules if k.split('.')[0] in ('torch', 'timm', 'onnx', 'onnxruntime',"
            " 'transformers', 'tests', 'reference'))\n"
            "assert not bad, bad\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]


def test_a_block_computed_for_its_first_rows_equals_those_rows_of_the_full_block():
    """``Encoder1DBlock(x, rows=R)`` (queries from the first R tokens, keys/values from all) == ``block(x)[:, :R]``."""
    config = vitjax.get_config("testing", hidden_size=32, mlp_dim=48, num_heads=4, layer_scale=True)
    block = vitjax.model.vit.Encoder1DBlock(config)
    x = jax.random.normal(jax.random.PRNGKey(3), (2, 9, 32))
    params = block.init(jax.random.PRNGKey(4), x)["params"]
    variables = {"params": jax.tree_util.tree_map(lambda a: a + 0.3 * jnp.ones_like(a), params)}  # scale not ~0
    full, probs = block.apply(variables, x)
    for rows in (1, 4):
        part, part_probs = block.apply(variables, x, rows=rows)
        assert part.shape == (2, rows, 32) and part_probs.shape == (2, 4, rows, 9)
        # 9 stages: LN_0, q/k/v, q.k, softmax, p.v, out, LN_2, Dense_0, Dense_1 (only the row count differs)
        tol = rounding_tol(float(jnp.abs(full).max()), steps=9, fan_in=48)
        np.testing.assert_allclose(part, full[:, :rows], rtol=0, atol=tol)
        ptol = rounding_tol(1.0, steps=3, fan_in=32)  # LN, q.k, softmax
        np.testing.assert_allclose(part_probs, probs[:, :, :rows], rtol=0, atol=ptol)
