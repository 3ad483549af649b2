"""Attention maps against a literal NumPy transcription of the recipe, properties, and the reference."""

import itertools

import numpy as np
import pytest
from support.helpers import rounding_tol

import vitjax
from vitjax import RolloutOptions as RO
from vitjax.attribution import rollout as A

# --- the literal transcription: one image at a time, plain loops ---------------------------


def np_layer(att, head_fusion, discard_ratio, residual):
    """att [H, N, N] -> Abar [N, N], written out as in jacobgil/vit-explain (fixed)."""
    if head_fusion == "mean":
        a = att.mean(axis=0)
    elif head_fusion == "max":
        a = att.max(axis=0)
    else:
        a = att.min(axis=0)
    a = a.astype(np.float64).copy()
    flat = a.reshape(-1)
    k = int(flat.size * discard_ratio)
    if k:
        idx = np.argsort(flat, kind="stable")[:k]
        idx = idx[idx != 0]
        flat[idx] = 0
    a = flat.reshape(a.shape)
    if residual:
        a = a + np.eye(a.shape[0])
    out = np.zeros_like(a)
    for i in range(a.shape[0]):
        s = a[i].sum()
        if s > 0:
            out[i] = a[i] / s
    return out


def np_rollout(att, head_fusion="mean", discard_ratio=0.0, start_layer=0, residual=True):
    """att [L, H, N, N] -> joint [N, N] = Abar_L ... Abar_{start+1}."""
    joint = np.eye(att.shape[-1])
    for layer in range(start_layer, att.shape[0]):
        joint = np_layer(att[layer], head_fusion, discard_ratio, residual) @ joint
    return joint


def np_map(joint, grid, prefix=1, class_token=True):
    row = joint[0, prefix:] if class_token else joint[prefix:, prefix:].mean(axis=0)
    m = row.reshape(grid)
    return m / m.max() if m.max() > 0 else m


def random_attention(rng, shape, peak=3.0):
    """Row-stochastic [..., N, N] with peaked rows (softmax of scaled normals)."""
    logits = rng.standard_normal(shape) * peak
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


# float32 maps against the float64 transcription: per layer ~2 rounding stages (fusion/renormalisation,
# one product) over sums of N = 16 terms, for L = 4 layers plus the readout; the division by the map's
# max doubles the relative error.
MAP_TOL = rounding_tol(1.0, steps=2 * (2 * 4 + 2), fan_in=16)
# the same for the model-captured attention: L = 3, N = 197
MODEL_MAP_TOL = rounding_tol(1.0, steps=2 * (2 * 3 + 2), fan_in=197)

OPTIONS = [
    dict(head_fusion=f, discard_ratio=d, start_layer=s, residual=r)
    for f, d, s, r in itertools.product(["mean", "max", "min"], [0.0, 0.5, 0.9], [0, 1], [True, False])
]


@pytest.fixture(scope="module")
def attn():
    # B=3, L=4, H=3, N=1+3*5 (non-square 3x5 grid)
    return random_attention(np.random.default_rng(0), (3, 4, 3, 16, 16))


@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: "-".join(str(v) for v in o.values()))
def test_rollout_matches_numpy_transcription(attn, opts):
    got = np.asarray(vitjax.attention_rollout(attn, RO(**opts)))
    want = np.stack([np_rollout(a, **opts) for a in attn])
    assert got.shape == (3, 16, 16)
    assert np.abs(got - want).max() <= MAP_TOL
    maps = np.asarray(vitjax.rollout_map(attn, (3, 5), RO(**opts)))
    want_maps = np.stack([np_map(j, (3, 5)) for j in want])
    assert maps.shape == (3, 3, 5)
    assert np.abs(maps - want_maps).max() <= MAP_TOL


@pytest.mark.parametrize("opts", OPTIONS[::5], ids=lambda o: "-".join(str(v) for v in o.values()))
def test_per_layer_maps_match_numpy(attn, opts):
    own = np.asarray(vitjax.layer_maps(attn, (3, 5), RO(**opts)))
    cum = np.asarray(vitjax.cumulative_maps(attn, (3, 5), RO(**opts)))
    assert own.shape == cum.shape == (3, 4, 3, 5)
    for b in range(3):
        for layer in range(4):
            a = np_layer(attn[b, layer], opts["head_fusion"], opts["discard_ratio"], opts["residual"])
            np.testing.assert_allclose(own[b, layer], np_map(a, (3, 5)), atol=MAP_TOL)
            sub = dict(opts)
            j = np.eye(16) if layer < opts["start_layer"] else np_rollout(attn[b, : layer + 1], **sub)
            np.testing.assert_allclose(cum[b, layer], np_map(j, (3, 5)), atol=MAP_TOL)
    # the last cumulative map is the joint map
    np.testing.assert_allclose(cum[:, -1], np.asarray(vitjax.rollout_map(attn, (3, 5), RO(**opts))), atol=MAP_TOL)


def test_head_maps_match_numpy(attn):
    got = np.asarray(vitjax.head_maps(attn, (3, 5), layer=2))
    assert got.shape == (3, 3, 3, 5)
    for b, h in itertools.product(range(3), range(3)):
        row = attn[b, 2, h, 0, 1:].reshape(3, 5)
        np.testing.assert_allclose(got[b, h], row / row.max(), atol=rounding_tol(1.0, steps=2))
    np.testing.assert_allclose(np.asarray(vitjax.head_maps(attn, (3, 5))),
                               np.asarray(vitjax.head_maps(attn, (3, 5), layer=3)))


def test_prefix_tokens_and_gap_models():
    rng = np.random.default_rng(1)
    att = random_attention(rng, (2, 3, 2, 2 + 12, 2 + 12))  # class + distillation token, 3x4 grid
    got = np.asarray(vitjax.rollout_map(att, (3, 4), RO(num_prefix_tokens=2)))
    want = np.stack([np_map(np_rollout(a), (3, 4), prefix=2) for a in att])
    np.testing.assert_allclose(got, want, atol=MAP_TOL)
    gap = random_attention(rng, (2, 3, 2, 12, 12))  # no class token: mean over patch rows
    got = np.asarray(vitjax.rollout_map(gap, (3, 4), RO(num_prefix_tokens=0, class_token=False)))
    want = np.stack([np_map(np_rollout(a), (3, 4), prefix=0, class_token=False) for a in gap])
    np.testing.assert_allclose(got, want, atol=MAP_TOL)


# --- properties -----------------------------------------------------------------------------


@pytest.mark.parametrize("fusion", ["mean", "max", "min"])
@pytest.mark.parametrize("discard", [0.0, 0.7])
def test_every_layer_factor_is_row_stochastic(attn, fusion, discard):
    a = np.asarray(A.layer_matrix(attn[0, 0], RO(head_fusion=fusion, discard_ratio=discard)))
    np.testing.assert_allclose(a.sum(-1), 1.0, atol=rounding_tol(1.0, steps=2, fan_in=16))
    joint = np.asarray(vitjax.attention_rollout(attn, RO(head_fusion=fusion, discard_ratio=discard)))
    np.testing.assert_allclose(joint.sum(-1), 1.0, atol=rounding_tol(1.0, steps=2 * 4 + 1, fan_in=16))


def test_zero_layers_is_identity(attn):
    eye = np.broadcast_to(np.eye(16), (3, 16, 16))
    np.testing.assert_array_equal(np.asarray(vitjax.attention_rollout(attn[:, :0])), eye)
    with pytest.raises(ValueError, match=r"start_layer must be in \[0, 3\].*4 layers.*got 4"):
        vitjax.attention_rollout(attn, RO(start_layer=4))  # would be the identity: a blank map


def test_permuting_heads_leaves_mean_fusion_unchanged(attn):
    perm = attn[:, :, ::-1]
    np.testing.assert_allclose(np.asarray(vitjax.attention_rollout(perm)),
                               np.asarray(vitjax.attention_rollout(attn)), atol=MAP_TOL)


def test_discard_zero_equals_no_discard(attn):
    a = A.layer_matrix(attn[1, 2], RO(discard_ratio=0.0))
    b = A.layer_matrix(attn[1, 2])
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # and a positive ratio does change the result, on every image of the batch
    full = np.asarray(vitjax.attention_rollout(attn, RO(head_fusion="max")))
    dropped = np.asarray(vitjax.attention_rollout(attn, RO(head_fusion="max", discard_ratio=0.9)))
    assert all(np.abs(full[b] - dropped[b]).max() > 1e-3 for b in range(3))


def test_discard_never_drops_class_to_class():
    att = np.full((1, 5, 5), 0.2, np.float32)
    att[0, 0, 0] = 1e-4  # the smallest entry
    a = np.asarray(A._discard(A.fuse_heads(att), int(25 * 0.5)))
    assert a[0, 0] == pytest.approx(1e-4)
    assert (a == 0).sum() == int(25 * 0.5) - 1  # k lowest minus the protected entry


def test_batch_equals_per_image(attn):
    batch = np.asarray(vitjax.rollout_map(attn, (3, 5), RO(head_fusion="max", discard_ratio=0.5)))
    for b in range(3):
        single = np.asarray(vitjax.rollout_map(attn[b], (3, 5), RO(head_fusion="max", discard_ratio=0.5)))
        np.testing.assert_allclose(batch[b], single, atol=MAP_TOL)


def test_non_square_grid_shape():
    att = random_attention(np.random.default_rng(2), (2, 2, 2, 1 + 12 * 20, 1 + 12 * 20))
    assert vitjax.rollout_map(att, (12, 20)).shape == (2, 12, 20)
    assert vitjax.cumulative_maps(att, (12, 20)).shape == (2, 2, 12, 20)
    assert vitjax.head_maps(att, (12, 20)).shape == (2, 2, 12, 20)


def test_upsample_to_photo_size():
    m = np.zeros((2, 3, 4), np.float32)
    m[:, 1, 2] = 1.0
    up = np.asarray(vitjax.upsample(m, (300, 200)))
    assert up.shape == (2, 300, 200)
    assert up.min() >= 0 and up.max() <= 1
    y, x = np.unravel_index(up[0].argmax(), up[0].shape)
    assert 100 <= y < 200 and 100 <= x < 150  # the peak stays in its cell


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda a: vitjax.attention_rollout(a[0, 0]), r"attention must be .*got shape \(4, 3, 16\)|got shape"),
        (lambda a: vitjax.attention_rollout(a[..., :15]), r"square.*\(3, 4, 3, 16, 15\)"),
        (lambda a: RO(discard_ratio=1.0), r"discard_ratio.*1\.0"),
        (lambda a: RO(discard_ratio=-0.1), r"discard_ratio"),
        (lambda a: RO(discard_ratio="x"), r"discard_ratio.*'x'"),
        (lambda a: RO(head_fusion="median"), r"head_fusion.*'median'"),
        (lambda a: RO(start_layer=1.5), r"start_layer.*1\.5"),
        (lambda a: RO(start_layer=-1), r"start_layer.*-1"),
        (lambda a: vitjax.attention_rollout(a, RO(start_layer=5)), r"start_layer.*4 layers.*5"),
        (lambda a: vitjax.cumulative_maps(a, (3, 5), RO(start_layer=4)), r"start_layer.*\[0, 3\].*got 4"),
        (lambda a: vitjax.attention_rollout(a, {"head_fusion": "max"}), r"RolloutOptions"),
        (lambda a: vitjax.rollout_map(a, (4, 4)), r"grid 4x4.*N = 16"),
        (lambda a: vitjax.head_maps(a, (3, 5), layer=4), r"layer"),
        (lambda a: vitjax.upsample(a[0, 0, 0], (0, 3)), r"size"),
    ],
)
def test_bad_input_names_argument_and_shape(attn, call, match):
    with pytest.raises(ValueError, match=match):
        call(attn)


# --- on the model -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_and_photo(make_checkpoint):
    from matplotlib import cbook

    model, params = vitjax.load_checkpoint(make_checkpoint("testing", num_layers=3))
    photo = vitjax.preprocess(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False), 224)
    noise = np.random.default_rng(3).uniform(-1, 1, photo.shape).astype(np.float32)
    return model, params, np.stack([photo, noise])


def test_captured_attention_matches_numpy(model_and_photo):
    """Every option combination on attentions captured from the model on a real photo."""
    model, params, x = model_and_photo
    att = np.asarray(vitjax.compute_maps(model, params, x, keep_attention=True)["attention"])
    grid = model.config.grid
    for opts in OPTIONS:
        want = np.stack([np_map(np_rollout(a, **opts), grid) for a in att])
        got = np.asarray(vitjax.rollout_map(att, grid, RO(**opts)))
        assert np.abs(got - want).max() <= MODEL_MAP_TOL, opts


@pytest.mark.parametrize("opts", [{}, dict(head_fusion="max", discard_ratio=0.8, start_layer=1),
                                  dict(head_fusion="min", residual=False)])
def test_lean_mode_equals_two_step(model_and_photo, opts):
    model, params, x = model_and_photo
    two = vitjax.compute_maps(model, params, x, RO(**opts))
    lean = vitjax.compute_maps(model, params, x, RO(**opts), lean=True)
    for k in ("logits", "rollout", "layer", "cumulative", "heads", "token_norms", "received"):
        assert two[k].shape == lean[k].shape
        assert np.abs(np.asarray(two[k]) - np.asarray(lean[k])).max() <= MODEL_MAP_TOL, k


def test_received_attention_is_the_column_mean(model_and_photo):
    model, params, x = model_and_photo
    out = vitjax.compute_maps(model, params, x, keep_attention=True)
    att = np.asarray(out["attention"], np.float64)  # [B, L, H, N, N]
    want = att[..., 1:].mean(axis=(2, 3)).reshape(2, 3, *model.config.grid)
    assert out["received"].shape == (2, 3) + model.config.grid
    np.testing.assert_allclose(np.asarray(out["received"]), want, atol=rounding_tol(want.max(), 2, fan_in=197 * 2))


def test_attention_maps_methods_and_shapes(model_and_photo):
    model, params, x = model_and_photo
    gh, gw = model.config.grid
    shapes = {"rollout": (2, gh, gw), "layer": (2, 3, gh, gw), "cumulative": (2, 3, gh, gw), "heads": (2, 2, gh, gw)}
    for method, shape in shapes.items():
        maps, logits = vitjax.attention_maps(model, params, x, method=method)
        assert maps.shape == shape and logits.shape == (2, 1000)
        assert float(np.asarray(maps).max()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="method"):
        vitjax.attention_maps(model, params, x, method="gradcam")


def test_against_timm_captured_attention(make_checkpoint):
    pytest.importorskip("timm")
    from matplotlib import cbook
    from support.reference import timm_forward, timm_model

    path = make_checkpoint("ViT-S_16", num_layers=2)
    model, params = vitjax.load_checkpoint(path)
    x = vitjax.preprocess(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False), 224)[None]
    _, _, ref_att = timm_forward(timm_model(model.config, path), x)  # hooks, fused attention off
    for opts in [{}, dict(head_fusion="max", discard_ratio=0.9), dict(start_layer=1)]:
        ref = np.stack([np_map(np_rollout(a, **opts), model.config.grid) for a in ref_att])
        ours = np.asarray(vitjax.attention_maps(model, params, x, options=RO(**opts))[0])
        assert np.abs(ours - ref).max() <= 1e-4, opts
