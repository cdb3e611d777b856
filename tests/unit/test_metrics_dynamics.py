"""Oracles of METRICS.md §8 (input dependence) and §9 (translation equivariance) on
synthetic arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from inspector import metrics


def one_hot(keys: int, at: int) -> np.ndarray:
    row = np.zeros(keys)
    row[at] = 1.0
    return row


def test_identical_maps_have_zero_input_dependence() -> None:
    rng = np.random.default_rng(0)
    row = rng.random((5, 7))
    maps = np.repeat(row[None], 6, axis=0)
    assert metrics.input_dependence(maps) == pytest.approx(0.0, abs=1e-12)


def test_two_disjoint_one_hot_maps_give_ln_2() -> None:
    maps = np.stack([one_hot(4, 0), one_hot(4, 3)])[:, None, :]
    assert metrics.input_dependence(maps) == pytest.approx(0.693147, abs=1e-6)
    assert metrics.input_dependence(maps) == pytest.approx(math.log(2), abs=1e-12)


@pytest.mark.parametrize("n", [2, 3, 5, 16])
def test_n_one_hot_maps_on_distinct_keys_give_ln_n(n: int) -> None:
    maps = np.stack([one_hot(20, 19 - i) for i in range(n)])
    assert metrics.input_dependence(maps) == pytest.approx(math.log(n), abs=1e-12)
    assert metrics.normalised_input_dependence(math.log(n), n, 20) == pytest.approx(1.0)


def test_maps_are_renormalised_and_bad_maps_refused() -> None:
    maps = np.stack([one_hot(3, 0) * 5, one_hot(3, 1) * 0.1])
    assert metrics.input_dependence(maps) == pytest.approx(math.log(2))
    with pytest.raises(ValueError, match="non-negative"):
        metrics.input_dependence(-maps)
    with pytest.raises(ValueError, match="at least one image"):
        metrics.input_dependence(np.zeros((0, 3, 3)))


def test_streamed_sums_equal_the_direct_definition() -> None:
    rng = np.random.default_rng(1)
    maps = rng.dirichlet(np.ones(9), size=(12, 4))  # [sample, query, key]
    direct = np.mean(
        [
            metrics.map_entropy(maps[:, q].mean(0)) - metrics.map_entropy(maps[:, q]).mean()
            for q in range(4)
        ]
    )
    streamed = metrics.input_dependence_from_sums(
        maps.sum(0), metrics.map_entropy(maps).mean(-1).sum(), 12
    )
    assert metrics.input_dependence(maps) == pytest.approx(direct, abs=1e-12)
    assert streamed == pytest.approx(direct, abs=1e-12)


def test_shift_cells_rolls_like_the_input_and_interpolates() -> None:
    grid = np.arange(16.0).reshape(1, 4, 4, 1)
    assert np.array_equal(metrics.shift_cells(grid, (1, 2)), np.roll(grid, (1, 2), axis=(1, 2)))
    half = metrics.shift_cells(grid, (0.5, 0))
    assert np.allclose(half, 0.5 * grid + 0.5 * np.roll(grid, 1, axis=1))


def test_equivariance_cosine_is_one_for_an_aligned_shift_only() -> None:
    rng = np.random.default_rng(2)
    base = rng.normal(size=(3, 8, 8, 5))
    shifted = np.roll(base, (2, 1), axis=(1, 2))
    assert np.allclose(metrics.equivariance_cosine(shifted, base, (2, 1), margin=0), 1.0)
    assert np.allclose(metrics.equivariance_cosine(shifted, base, (2, 1), margin=2), 1.0)
    assert (metrics.equivariance_cosine(shifted, base, (-2, -1), margin=0) < 0.5).all()
    with pytest.raises(ValueError, match="one shape"):
        metrics.equivariance_cosine(shifted[:, :4], base, (0, 0), margin=0)
