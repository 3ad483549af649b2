import dataclasses

import jax
import numpy as np
import pytest

import vitjax
from vitjax.checkpoints.load import expected_shapes

# Google's model tests (vit_jax/models_test.py), 224 px, 1000-class head, no pre_logits.
OFFICIAL_PARAMS = {
    "testing": 21_390,
    "ViT-Ti_16": 5_717_416,
    "ViT-S_16": 22_050_664,
    "ViT-B_16": 86_567_656,
    "ViT-B_32": 88_224_232,
    "ViT-B_8": 86_576_872,
    "ViT-L_16": 304_326_632,
    "ViT-L_32": 306_535_400,
    "ViT-H_14": 632_045_800,
    "R50+ViT-B_16": 98_659_112,
}


@pytest.mark.parametrize("name", sorted(OFFICIAL_PARAMS))
def test_parameter_counts_match_official(name):
    shapes = expected_shapes(vitjax.ViT(vitjax.get_config(name)))  # jax.eval_shape inside
    assert sum(int(np.prod(s)) for s in shapes.values()) == OFFICIAL_PARAMS[name]


def test_eval_shape_allocates_nothing():
    model = vitjax.ViT(vitjax.get_config("ViT-H_14"))
    out = jax.eval_shape(
        model.init, jax.random.PRNGKey(0), jax.ShapeDtypeStruct((1, 224, 224, 3), np.float32)
    )
    leaves = jax.tree_util.tree_leaves(out)
    assert leaves and all(isinstance(x, jax.ShapeDtypeStruct) for x in leaves)


@pytest.mark.parametrize(
    "name,size,grid",
    [
        ("ViT-B_16", 224, (14, 14)),
        ("ViT-B_16", 384, (24, 24)),
        ("ViT-B_32", 224, (7, 7)),
        ("ViT-H_14", 224, (16, 16)),
        ("R50+ViT-B_16", 384, (24, 24)),
        ("ViT-B_16", (192, 320), (12, 20)),
    ],
)
def test_grid(name, size, grid):
    config = vitjax.get_config(name, image_size=size)
    assert config.grid == grid
    assert config.num_tokens == 1 + grid[0] * grid[1]


def test_config_is_hashable_and_frozen():
    c = vitjax.get_config("ViT-B_16")
    assert hash(c) == hash(vitjax.get_config("ViT-B_16"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.hidden_size = 1


def test_unknown_variant_lists_known():
    with pytest.raises(ValueError, match="ViT-B_16"):
        vitjax.get_config("ViT-Z_99")


def test_bad_heads_rejected():
    with pytest.raises(ValueError, match="num_heads"):
        vitjax.get_config("testing", num_heads=3)


def test_image_size_must_be_a_multiple_of_the_patch():
    with pytest.raises(ValueError, match=r"100x100 is not a multiple of the patch size 16x16.*96x96"):
        vitjax.get_config("ViT-B_16", image_size=100)
    assert vitjax.get_config("ViT-B_16", image_size=(96, 128)).grid == (6, 8)
    assert vitjax.get_config("R50+ViT-B_16", image_size=100).grid == (7, 7)  # the hybrid's stem pads (SAME)
