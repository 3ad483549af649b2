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


# --- every field is checked (issue #17, fault 5) ---------------------------------------------------------------


@pytest.mark.parametrize("field,value", [
    ("num_heads", True), ("num_heads", 2.9), ("num_heads", "2"), ("num_heads", float("inf")), ("num_heads", 0),
    ("hidden_size", float("nan")), ("num_layers", -1), ("mlp_dim", None), ("patch_size", 0), ("patch_size", (16, 0)),
    ("patch_size", (16, 16, 16)), ("image_size", (True, 224)), ("image_size", 224.5), ("num_classes", -3),
    ("num_classes", True), ("representation_size", 0), ("resnet_layers", ()), ("resnet_layers", (3, 0)),
    ("resnet_width", 0), ("num_registers", -1), ("num_registers", 1.5), ("layer_norm_eps", float("nan")),
    ("layer_norm_eps", float("inf")), ("layer_norm_eps", True), ("layer_norm_eps", "1e-6"),
    ("pixel_mean", (True, False, True)), ("pixel_mean", (0.5, 0.5)), ("pixel_mean", (float("nan"), 0.5, 0.5)),
    ("pixel_std", (1e-300, 0.5, 0.5)), ("pixel_std", (0.0, 0.5, 0.5)), ("pixel_std", (1e300, 0.5, 0.5)),
    ("gelu_approximate", 1), ("layer_scale", "yes"), ("random_weights", 1), ("source", 3),
])
def test_bad_fields_are_refused_naming_the_field(field, value):
    with pytest.raises(ValueError) as info:
        vitjax.get_config("testing", **{field: value})
    text = str(info.value)
    assert field in text and "\n" not in text, text


def test_a_zero_patch_is_a_value_error_not_a_division_by_zero():
    with pytest.raises(ValueError, match="patch_size"):
        vitjax.ViTConfig(patch_size=(0, 16))


def test_whole_numbers_and_numpy_integers_are_accepted():
    c = vitjax.get_config("testing", image_size=np.array([224.0, 160.0]), num_heads=np.int64(2), num_registers=2.0)
    assert c.image_size == (224, 160) and c.num_heads == 2 and c.num_registers == 2
    assert all(type(x) is int for x in (*c.image_size, c.num_heads, c.num_registers))
    assert hash(c) == hash(vitjax.get_config("testing", image_size=(224, 160), num_registers=2))


def test_random_weights_defaults_to_false_and_is_part_of_the_config():
    c = vitjax.get_config("testing")
    assert c.random_weights is False
    marked = c.replace(random_weights=True)
    assert marked.random_weights is True and marked != c
