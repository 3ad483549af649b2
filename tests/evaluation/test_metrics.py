"""Known answers for the map-vs-object metrics, the resampling, the baselines and mean attention distance."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from vitjax.evaluation.metrics import (
    area_fraction,
    eval_size,
    gaussian_map,
    iou_at_mean,
    mass_in_box,
    mean_attention_distance,
    patch_distances,
    pointing_game,
    roc_auc,
    score_maps,
    uniform_map,
)

H, W = 8, 10
SQUARE = np.zeros((H, W), bool)
SQUARE[2:5, 3:7] = True  # 12 object pixels of 80


def test_perfect_map_scores_one():
    m = SQUARE.astype(np.float32)
    assert pointing_game(m, SQUARE) == 1.0
    assert iou_at_mean(m, SQUARE) == 1.0
    assert roc_auc(m, SQUARE) == 1.0
    assert mass_in_box(m, SQUARE) == 1.0


def test_inverted_map_scores_zero():
    m = (~SQUARE).astype(np.float32)
    assert pointing_game(m, SQUARE) == 0.0
    assert iou_at_mean(m, SQUARE) == 0.0
    assert roc_auc(m, SQUARE) == 0.0
    assert mass_in_box(m, SQUARE) == 0.0


def test_constant_map_scores_chance():
    m = np.full((H, W), 0.3, np.float32)  # 0.3 * 80 / 80 in float32 need not equal 0.3: the flat rule decides
    area = SQUARE.mean()
    assert pointing_game(m, SQUARE) == pytest.approx(area, abs=1e-15)  # 12 / 80 from counts
    assert iou_at_mean(m, SQUARE) == pytest.approx(area, abs=1e-15)
    assert roc_auc(m, SQUARE) == 0.5
    assert mass_in_box(m, SQUARE) == pytest.approx(area, abs=1e-15)


def test_single_peak_pointing_and_vectorised_leading_axes():
    maps = np.zeros((2, 3, H, W))
    maps[0, 0, 3, 4] = 1.0  # on the object
    maps[0, 1, 0, 0] = 1.0  # off
    maps[0, 2, 3, 4] = maps[0, 2, 0, 0] = 1.0  # two maxima, one on: 1/2
    maps[1] = maps[0] + 0.0
    hit = pointing_game(maps, SQUARE)
    assert hit.shape == (2, 3)
    np.testing.assert_array_equal(hit, [[1.0, 0.0, 0.5]] * 2)


def test_iou_hand_example():
    # mean of this map is 2 * 6 / 80 = 0.15; >= mean selects a 2 x 3 block overlapping the square in 2 x 2
    m = np.zeros((H, W))
    m[3:5, 5:8] = 2.0
    inter, union = 4, 12 + 6 - 4
    assert iou_at_mean(m, SQUARE) == inter / union


def _auc_pairs(v, mask):
    """Literal definition: P(pos > neg) + 1/2 P(pos == neg) over all pairs."""
    pos, neg = v[mask], v[~mask]
    wins = sum((p > q) + 0.5 * (p == q) for p, q in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_auc_equals_pairwise_definition_with_ties(rng):
    maps = rng.integers(0, 4, size=(5, H, W)).astype(np.float64)  # many ties
    maps[0] = rng.random((H, W))  # none
    got = roc_auc(maps, SQUARE)
    want = [_auc_pairs(m.ravel(), SQUARE.ravel()) for m in maps]
    # both are sums of half-integers divided by 12 * 68: equal to float64 rounding of one division
    np.testing.assert_allclose(got, want, rtol=1e-14, atol=0)


def test_auc_hand_example():
    mask = np.array([[True, False], [False, True]])
    m = np.array([[0.9, 0.8], [0.1, 0.8]])
    # pairs (pos, neg): (0.9,0.8)=1 (0.9,0.1)=1 (0.8,0.8)=0.5 (0.8,0.1)=1 -> 3.5 / 4
    assert roc_auc(m, mask) == 0.875


def test_undefined_cases_are_nan():
    empty = np.zeros((H, W), bool)
    full = np.ones((H, W), bool)
    m = np.random.default_rng(1).random((H, W))
    for f in (pointing_game, iou_at_mean, roc_auc):
        assert np.isnan(f(m, empty))
    assert np.isnan(roc_auc(m, full))
    assert np.isnan(mass_in_box(np.zeros((H, W)), SQUARE))
    out = score_maps(np.zeros((4, H, W)), None, None)
    assert set(out) == {"pointing", "iou", "auc", "boxmass"} and all(np.isnan(v).all() for v in out.values())
    with pytest.raises(ValueError, match="share H, W"):
        pointing_game(np.zeros((3, 3)), SQUARE)


def test_mass_in_box_soft_weights():
    m = np.array([[1.0, 3.0], [0.0, 4.0]])
    box = np.array([[1.0, 0.5], [0.0, 0.25]])
    assert mass_in_box(m, box) == (1.0 + 1.5 + 1.0) / 8.0


def test_score_maps_matches_single_functions(rng):
    maps = rng.random((3, H, W))
    box = SQUARE.astype(float)
    out = score_maps(maps, SQUARE, box)
    np.testing.assert_array_equal(out["auc"], roc_auc(maps, SQUARE))
    np.testing.assert_array_equal(out["boxmass"], mass_in_box(maps, box))
    assert np.isnan(score_maps(maps, SQUARE, None)["boxmass"]).all()


def test_area_fraction_known_answers():
    mask = np.zeros((4, 4))
    mask[:2, :2] = 1.0
    np.testing.assert_array_equal(area_fraction(mask, (2, 2)), [[1.0, 0.0], [0.0, 0.0]])
    # 3 pixels -> 2 cells of 1.5 pixels: the middle pixel is split half and half
    row = np.array([[1.0, 1.0, 0.0]])
    np.testing.assert_allclose(area_fraction(row, (1, 2)), [[1.0, 1.0 / 3.0]], rtol=1e-15)
    # upsampling keeps values (each cell lies inside one pixel)
    np.testing.assert_allclose(area_fraction(np.array([[0.0, 1.0]]), (2, 4)), [[0, 0, 1, 1]] * 2, atol=1e-15)
    # total area is preserved under any resampling
    m = np.random.default_rng(2).random((13, 7))
    got = area_fraction(m, (5, 9))
    assert got.mean() == pytest.approx(m.mean(), rel=1e-12)


def _area_brute(a, size):
    """Literal definition: overlap area of every photo pixel [j, j+1) x [i, i+1) with every cell, / cell area."""
    (h, w), (H, W) = a.shape, size

    def overlap(n_in, n_out):
        edges = np.arange(n_out + 1) * (n_in / n_out)
        return np.array([[max(0.0, min(edges[o + 1], j + 1) - max(edges[o], j)) for j in range(n_in)]
                         for o in range(n_out)]) / (n_in / n_out)

    return overlap(h, H) @ a @ overlap(w, W).T


@pytest.mark.parametrize("shape, size", [((13, 7), (5, 9)), ((200, 300), (56, 56)), ((3, 3), (3, 3)), ((1, 4), (2, 3))])
def test_area_fraction_equals_overlap_definition(shape, size):
    a = np.random.default_rng(3).random(shape) > 0.4
    # running sums vs products: both exact up to float64 rounding of sums of <= 300 terms <= 1
    np.testing.assert_allclose(area_fraction(a, size), _area_brute(a.astype(float), size), rtol=0, atol=1e-12)


def test_eval_size_and_baselines():
    assert eval_size((14, 14)) == (56, 56) and eval_size((24, 37), 2) == (48, 74)
    with pytest.raises(ValueError):
        eval_size((14, 14), 0)
    g = gaussian_map((5, 7))
    assert g.shape == (5, 7) and g[2, 3] == 1.0 and g.argmax() == 2 * 7 + 3
    np.testing.assert_allclose(g, g[::-1, ::-1], rtol=1e-15)  # centred
    # sigma = H / 4 along y: one sigma below the centre of a 8-row map is row 3.5 + 2
    g8 = gaussian_map((8, 1))
    np.testing.assert_allclose(g8[:, 0], np.exp(-0.5 * ((np.arange(8) - 3.5) / 2.0) ** 2), rtol=1e-15)
    u = uniform_map((3, 4))
    assert u.shape == (3, 4) and (u == 1).all()


def test_patch_distances():
    d = patch_distances((2, 3), (16, 8))
    assert d.shape == (6, 6)
    assert d[0, 0] == 0 and d[0, 1] == 8 and d[0, 3] == 16
    assert d[0, 5] == pytest.approx(np.hypot(16, 16), rel=1e-15)
    np.testing.assert_array_equal(d, d.T)


def test_mean_attention_distance_known_answers():
    grid, stride = (1, 2), (16, 16)
    n = 3  # class token + 2 patches
    a = np.zeros((4, n, n), np.float32)
    a[0] = np.eye(n)  # every token attends to itself: distance 0
    a[1, :, 0] = 1.0  # everything on the class token: distance 0 (not renormalised)
    a[2, 1] = [0.0, 0.5, 0.5]  # patch 0: half on patch 1 -> 8 px
    a[2, 2] = [0.0, 1.0, 0.0]  # patch 1: all on patch 0 -> 16 px
    a[2, 0] = [0.0, 0.0, 1.0]  # the class token's query row is ignored
    a[3, 1:] = [[0.5, 0.0, 0.5], [0.5, 0.5, 0.0]]  # half on class, half on the other patch: 8 each
    got = np.asarray(mean_attention_distance(a, grid, stride, 1))
    np.testing.assert_allclose(got, [0.0, 0.0, 12.0, 8.0], rtol=1e-6)  # float32 einsum of two terms
    with pytest.raises(ValueError, match="N = 1"):
        mean_attention_distance(a, (2, 2), stride, 1)


def test_mean_attention_distance_uniform_equals_mean_distance():
    grid, stride = (3, 4), (16, 16)
    n = 12
    a = np.full((2, 5, 1 + n, 1 + n), 1.0 / (1 + n), np.float32)
    got = np.asarray(mean_attention_distance(a, grid, stride, 1))
    want = patch_distances(grid, stride).sum() / (n * (1 + n))
    assert got.shape == (2, 5)
    np.testing.assert_allclose(got, want, rtol=1e-6)  # float32 sums of 144 terms
