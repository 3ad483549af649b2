"""Tiny random ViTs for the tests of activations, interventions, the lens and head importance."""

from __future__ import annotations

import jax

import vitjax
from vitjax.model.config import get_config


def tiny_model(seed=0, batch=2, size=32, **overrides):
    """A tiny random ViT (16 px patches, 2 layers, D = 16, 4 heads, 7 classes unless ``overrides`` say otherwise).

    Returns ``(model, params, images [batch, size, size, 3])``. Every parameter gets N(0, 0.5) added to its
    initial value, so attention is peaked and no weight is a round number (zero biases, unit norms).
    """
    kw = dict(num_layers=2, image_size=size, hidden_size=16, mlp_dim=24, num_heads=4, num_classes=7)
    kw.update(overrides)
    config = get_config("testing", **kw)
    model = vitjax.ViT(config)
    x = jax.random.normal(jax.random.key(seed + 1), (batch, *config.image_size, 3))
    params = model.init(jax.random.key(seed), x)["params"]
    keys = iter(jax.random.split(jax.random.key(seed + 2), 1000))
    params = jax.tree_util.tree_map(lambda a: a + 0.5 * jax.random.normal(next(keys), a.shape), params)
    return model, params, x
