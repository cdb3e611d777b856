"""Oracles of METRICS.md §1, §2, §4 (JS divergence) and §6 on synthetic attention maps."""

from __future__ import annotations

import numpy as np
import pytest

from inspector.metrics import (
    attention_entropy,
    attention_rollout,
    distance_matrix,
    js_divergence,
    mean_attention_distance,
    pairwise_js_divergence,
    token_centres,
)

RTOL = 1e-6
GRID, PATCH = 14, 16


@pytest.fixture(scope="module")
def distances() -> np.ndarray:
    centres = token_centres(GRID, GRID, PATCH, PATCH)
    return distance_matrix(centres, centres)


def grid_index() -> tuple[np.ndarray, np.ndarray]:
    tokens = np.arange(GRID * GRID)
    return tokens // GRID, tokens % GRID


def uniform(n: int) -> np.ndarray:
    return np.full((n, n), 1.0 / n)


def test_token_centres_are_row_major_patch_centres() -> None:
    centres = token_centres(2, 3, 16, 8)
    expected = [[8, 4], [8, 12], [8, 20], [24, 4], [24, 12], [24, 20]]
    np.testing.assert_array_equal(centres, expected)


def test_distance_matrix_is_euclidean_in_pixels() -> None:
    queries = np.array([[0.0, 0.0], [3.0, 4.0]])
    keys = np.array([[0.0, 0.0], [6.0, 8.0], [3.0, 0.0]])
    np.testing.assert_allclose(distance_matrix(queries, keys), [[0, 10, 3], [5, 5, 4]])


@pytest.mark.parametrize("bad", [(0, 3, 16, 16), (3, 3, 0, 16)])
def test_token_centres_rejects_empty_grid_or_stride(bad: tuple[int, int, int, int]) -> None:
    with pytest.raises(ValueError):
        token_centres(*bad)


def test_identity_attention_is_zero(distances: np.ndarray) -> None:
    stats = mean_attention_distance(np.eye(GRID * GRID), distances, prefix=0)
    assert stats.renormalised == 0.0
    assert stats.raw == 0.0


def test_uniform_attention_self_included(distances: np.ndarray) -> None:
    stats = mean_attention_distance(uniform(196), distances, prefix=0)
    np.testing.assert_allclose(stats.renormalised, 116.492227, rtol=RTOL)
    np.testing.assert_allclose(stats.raw, 116.492227, rtol=RTOL)
    assert stats.prefix_mass == 0.0


def test_uniform_attention_self_excluded(distances: np.ndarray) -> None:
    probs = uniform(196)
    np.fill_diagonal(probs, 0.0)
    probs /= probs.sum(-1, keepdims=True)
    stats = mean_attention_distance(probs, distances, prefix=0)
    np.testing.assert_allclose(stats.renormalised, 117.089623, rtol=RTOL)


def test_farthest_patch_attention(distances: np.ndarray) -> None:
    probs = np.zeros((196, 196))
    probs[np.arange(196), distances.argmax(1)] = 1.0
    stats = mean_attention_distance(probs, distances, prefix=0)
    np.testing.assert_allclose(stats.renormalised, 228.527635, rtol=RTOL)


def test_uniform_on_7x7_with_32px_patches() -> None:
    centres = token_centres(7, 7, 32, 32)
    stats = mean_attention_distance(uniform(49), distance_matrix(centres, centres), prefix=0)
    np.testing.assert_allclose(stats.renormalised, 115.502894, rtol=RTOL)


@pytest.mark.parametrize(("size", "expected"), [(3, 16.698065), (5, 28.831249), (7, 40.224352)])
def test_clipped_neighbourhoods(distances: np.ndarray, size: int, expected: float) -> None:
    rows, cols = grid_index()
    near = (np.abs(rows[:, None] - rows) <= size // 2) & (np.abs(cols[:, None] - cols) <= size // 2)
    probs = near / near.sum(-1, keepdims=True)
    stats = mean_attention_distance(probs, distances, prefix=0)
    np.testing.assert_allclose(stats.renormalised, expected, rtol=RTOL)


def test_class_token_share_is_renormalised_away(distances: np.ndarray) -> None:
    probs = np.zeros((197, 197))
    probs[:, 0] = 0.25
    probs[:, 1:] = 0.75 / 196
    stats = mean_attention_distance(probs, distances, prefix=1)
    np.testing.assert_allclose(stats.renormalised, 116.492227, rtol=RTOL)
    np.testing.assert_allclose(stats.raw, 87.369170, rtol=RTOL)
    np.testing.assert_allclose(stats.prefix_mass, 0.25, rtol=RTOL)
    assert stats.empty_rows == 0


def test_offset_head_measures_queries_that_have_a_neighbour(distances: np.ndarray) -> None:
    # Queries in the last column have no (0, +1) patch: they send all mass to the class
    # token and must drop out of the renormalised mean rather than count as 0 px.
    _, cols = grid_index()
    probs = np.zeros((197, 197))
    has_right = cols < GRID - 1
    queries = 1 + np.flatnonzero(has_right)
    probs[queries, queries + 1] = 1.0
    probs[1 + np.flatnonzero(~has_right), 0] = 1.0
    probs[0, 0] = 1.0
    stats = mean_attention_distance(probs, distances, prefix=1)
    np.testing.assert_allclose(stats.renormalised, 16.0, rtol=RTOL)
    assert stats.empty_rows == GRID
    np.testing.assert_allclose(stats.raw, 16.0 * 182 / 196, rtol=RTOL)
    np.testing.assert_allclose(stats.prefix_mass, GRID / 196, rtol=RTOL)


def test_all_mass_on_prefix_gives_nan(distances: np.ndarray) -> None:
    probs = np.zeros((197, 197))
    probs[:, 0] = 1.0
    stats = mean_attention_distance(probs, distances, prefix=1)
    assert np.isnan(stats.renormalised)
    assert stats.raw == 0.0
    assert stats.prefix_mass == 1.0


def test_leading_axes_are_kept(distances: np.ndarray) -> None:
    rows, cols = grid_index()
    near = (np.abs(rows[:, None] - rows) <= 1) & (np.abs(cols[:, None] - cols) <= 1)
    maps = [np.eye(196), uniform(196), near / near.sum(-1, keepdims=True)]
    stack = np.stack([maps, maps[::-1]])  # [sample, head, query, key]
    stats = mean_attention_distance(stack.astype(np.float32), distances, prefix=0)
    assert stats.renormalised.shape == (2, 3)
    np.testing.assert_allclose(stats.renormalised[0], [0, 116.492227, 16.698065], rtol=1e-5)
    np.testing.assert_allclose(stats.renormalised[1], [16.698065, 116.492227, 0], rtol=1e-5)


def test_key_prefix_and_reduced_key_grid() -> None:
    # PVT-like: 4×4 queries at stride 16, keys on a 2×2 grid at stride 32, no prefix keys.
    queries = token_centres(4, 4, 16, 16)
    keys = token_centres(2, 2, 32, 32)
    probs = np.zeros((17, 4))
    probs[1:, 0] = 1.0  # every spatial query attends to the top-left reduced key (16, 16)
    probs[0] = 0.25
    stats = mean_attention_distance(probs, distance_matrix(queries, keys), 1, key_prefix=0)
    expected = np.hypot(queries[:, 0] - 16, queries[:, 1] - 16).mean()
    np.testing.assert_allclose(stats.renormalised, expected, rtol=RTOL)


def test_mismatched_distances_are_rejected(distances: np.ndarray) -> None:
    with pytest.raises(ValueError, match="distances"):
        mean_attention_distance(uniform(196), distances, prefix=1)


def test_entropy_oracles() -> None:
    entropy, normalised = attention_entropy(uniform(196), prefix=0)
    np.testing.assert_allclose(entropy, 5.278115, rtol=RTOL)
    np.testing.assert_allclose(normalised, 1.0, rtol=RTOL)
    entropy, _ = attention_entropy(uniform(197), prefix=1)
    np.testing.assert_allclose(entropy, 5.283204, rtol=RTOL)
    entropy, normalised = attention_entropy(np.eye(197), prefix=1)
    assert entropy == 0.0
    assert normalised == 0.0


def test_entropy_without_prefix_keys_renormalises() -> None:
    probs = np.zeros((197, 197))
    probs[:, 0] = 0.25
    probs[:, 1:] = 0.75 / 196
    spatial, normalised = attention_entropy(probs, prefix=1, include_prefix_keys=False)
    np.testing.assert_allclose(spatial, np.log(196), rtol=RTOL)
    np.testing.assert_allclose(normalised, 1.0, rtol=RTOL)
    full, _ = attention_entropy(probs, prefix=1)
    expected = -(0.25 * np.log(0.25) + 0.75 * np.log(0.75 / 196))
    np.testing.assert_allclose(full, expected, rtol=RTOL)
    probs[:, 0], probs[:, 1:] = 1.0, 0.0
    empty, _ = attention_entropy(probs, prefix=1, include_prefix_keys=False)
    assert np.isnan(empty)


def test_js_divergence_values() -> None:
    p = np.array([[1.0, 0.0], [0.5, 0.5]])
    q = np.array([[0.0, 1.0], [0.5, 0.5]])
    np.testing.assert_allclose(js_divergence(p, q), np.log(2) / 2, rtol=RTOL)
    half = js_divergence(np.array([[1.0, 0.0]]), np.array([[0.5, 0.5]]))
    m = np.array([0.75, 0.25])
    np.testing.assert_allclose(half, -(m * np.log(m)).sum() - np.log(2) / 2, rtol=RTOL)


def test_pairwise_js_matches_pairs_and_is_symmetric() -> None:
    rng = np.random.default_rng(0)
    maps = rng.dirichlet(np.ones(10), size=(3, 4, 6))  # [sample, head, query, key]
    matrix = pairwise_js_divergence(maps)
    assert matrix.shape == (4, 4)
    np.testing.assert_array_equal(np.diag(matrix), 0.0)
    np.testing.assert_allclose(matrix, matrix.T)
    np.testing.assert_allclose(matrix[1, 3], js_divergence(maps[:, 1], maps[:, 3]).mean())
    assert (matrix[~np.eye(4, dtype=bool)] > 0).all()
    assert (matrix <= np.log(2)).all()


def test_rollout_oracle() -> None:
    rollout = attention_rollout([np.full((3, 197, 197), 1.0 / 197)] * 12)
    np.testing.assert_allclose(np.diag(rollout), 0.005319, rtol=1e-4)
    np.testing.assert_allclose(rollout[0, 1], 0.005075, rtol=1e-4)
    exact_diag = 2.0**-12 + (1 - 2.0**-12) / 197
    np.testing.assert_allclose(np.diag(rollout), exact_diag, rtol=1e-9)


def test_rollout_order_and_rows() -> None:
    rng = np.random.default_rng(1)
    layers = [rng.dirichlet(np.ones(5), size=(2, 5)) for _ in range(2)]  # [head, q, k]
    mixed = [(a.mean(0) + np.eye(5)) / 2 for a in layers]  # rows of mean_h A + I sum to 2
    rollout = attention_rollout(layers)
    np.testing.assert_allclose(rollout, mixed[1] @ mixed[0])
    np.testing.assert_allclose(rollout.sum(-1), 1.0)


def test_padded_slots_are_not_tokens_in_the_numpy_api() -> None:
    """A 2×2 image map in a 3×3 window: uniform attention over all 9 slots, with the real
    slots given, reads as uniform attention over the 4 real tokens (METRICS.md §1)."""
    slots = token_centres(3, 3, 16, 16)
    real = np.zeros((3, 3), dtype=bool)
    real[:2, :2] = True
    real = real.ravel()
    d = distance_matrix(slots, slots)
    stats = mean_attention_distance(uniform(9), d, 0, real_queries=real, real_keys=real)
    tokens = token_centres(2, 2, 16, 16)
    want = distance_matrix(tokens, tokens).mean()  # (0 + 16 + 16 + 16√2) / 4
    assert stats.renormalised == pytest.approx(want, rel=RTOL)
    assert stats.raw == pytest.approx(want * 4 / 9, rel=RTOL)  # unnormalised: 4/9 of the mass
    assert stats.empty_rows == 0
    entropy, normalised = attention_entropy(uniform(9), 0, real_queries=real, real_keys=real)
    assert entropy == pytest.approx(np.log(4), rel=RTOL)
    assert normalised == pytest.approx(1.0, rel=RTOL)
    with pytest.raises(ValueError, match=r"real_keys .* 9 spatial keys"):
        mean_attention_distance(uniform(9), d, 0, real_keys=real[:4])
