"""Matmul precision is part of the model: every dot and convolution carries it, whatever JAX's global setting.

CI has no GPU, so the lowered StableHLO is the guard: on a GPU, a dot without ``HIGHEST`` may run in
TF32 (measured on an H200: ViT-B/16 logits 7e-3 relative off, R50 hybrid top-5 changed).
"""

import re

import jax
import jax.numpy as jnp
import pytest

import vitjax
from vitjax.attribution.maps import _maps_lean, _maps_two_step
from vitjax.model.config import MATMUL_PRECISIONS
from vitjax.model.forward import _forward

EXPECTED = {"float32": "HIGHEST", "tensorfloat32": "HIGH", "bfloat16": "DEFAULT"}
_OP = re.compile(r"stablehlo\.(dot_general|convolution)\b")
_PRECISION = re.compile(r"precision(?:_config)? = \[([^\]]*)\]")

CONFIGS = {
    "vit": dict(variant="testing", num_layers=2, layer_scale=True, num_registers=2),
    "hybrid": dict(variant="R50+ViT-B_16", resnet_layers=(1, 1), hidden_size=64, mlp_dim=64, num_heads=4,
                   num_layers=2, image_size=64),
}


def op_precisions(hlo: str):
    """The precision of every dot_general / convolution in a StableHLO module: ['HIGHEST', ...]."""
    found = []
    for line in hlo.splitlines():
        if not _OP.search(line):
            continue
        m = _PRECISION.search(line)
        words = re.findall(r"HIGHEST|HIGH|DEFAULT", m.group(1)) if m else []
        assert len(set(words)) <= 1, line
        found.append(words[0] if words else "none")
    return found


def lowered(config, what):
    model = vitjax.ViT(config)
    h, w = config.image_size
    x = jnp.zeros((2, h, w, 3), jnp.float32)
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)["params"]
    if what == "forward":
        return _forward.lower(model, params, x).as_text()
    options = vitjax.RolloutOptions(head_fusion="max", discard_ratio=0.5).for_config(config)
    dyn = vitjax.attribution.rollout.dynamic_options(options, config.num_tokens)
    if what == "maps":
        return _maps_two_step.lower(model, params, x, dyn, options.static, False).as_text()
    return _maps_lean.lower(model, params, x, dyn, options.static).as_text()


@pytest.mark.parametrize("kind", sorted(CONFIGS))
@pytest.mark.parametrize("mode", MATMUL_PRECISIONS)
def test_every_dot_and_conv_carries_the_model_precision(kind, mode):
    spec = dict(CONFIGS[kind])
    config = vitjax.get_config(spec.pop("variant"), matmul_precision=mode, **spec)
    # the global setting is the opposite of what the model asks for, so only explicit precisions survive
    with jax.default_matmul_precision("bfloat16" if mode == "float32" else "float32"):
        forward = op_precisions(lowered(config, "forward"))
        two_step = op_precisions(lowered(config, "maps"))
        lean = op_precisions(lowered(config, "lean"))
    n_model = 8 * config.num_layers + 1 + (10 if kind == "hybrid" else 1)  # q,k,v,2 einsums,out,2 MLP; head; convs
    assert len(forward) == n_model
    assert forward == [EXPECTED[mode]] * n_model
    for ops in (two_step, lean):
        # the model's products in its own precision; the maps' products (rollout) always in float32
        assert ops.count(EXPECTED[mode]) >= n_model if mode == "float32" else ops.count(EXPECTED[mode]) == n_model
        assert set(ops) <= {EXPECTED[mode], "HIGHEST"}
        assert "none" not in ops


def test_load_checkpoint_sets_precision(tiny_checkpoint):
    model, _ = vitjax.load_checkpoint(tiny_checkpoint, matmul_precision="tensorfloat32")
    assert model.config.matmul_precision == "tensorfloat32"
    assert model.config.precision == jax.lax.Precision.HIGH
    model, _ = vitjax.load_checkpoint(tiny_checkpoint)
    assert model.config.precision == jax.lax.Precision.HIGHEST
    with pytest.raises(ValueError, match=r"matmul_precision must be one of float32, tensorfloat32, bfloat16.*'tf32'"):
        vitjax.load_checkpoint(tiny_checkpoint, matmul_precision="tf32")


def test_bfloat16_compute_dtype_is_visible_in_the_program():
    config = vitjax.get_config("testing", num_layers=1)
    model = vitjax.ViT(config, dtype=jnp.bfloat16)
    x = jnp.zeros((1, 224, 224, 3), jnp.float32)
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)["params"]
    hlo = _forward.lower(model, params, x).as_text()
    dots = [line for line in hlo.splitlines() if "stablehlo.dot_general" in line]
    assert any("bf16" in line for line in dots)
    # softmax stays float32: the attention logits are produced in float32
    assert any("tensor<1x2x197x197xf32>" in line for line in dots)
