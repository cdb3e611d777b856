"""Oracles of METRICS.md §5: importance normalisation, pruning summary, rank agreement."""

from __future__ import annotations

import numpy as np
import pytest

from inspector.metrics import (
    IntervalSpec,
    largest_prunable_fraction,
    normalise_importance,
    rankdata,
    spearman,
    spearman_interval,
)

FRACTIONS = [round(0.1 * step, 1) for step in range(11)]


def test_normalisation_oracle() -> None:
    layers = normalise_importance([np.array([1.0, 2.0, 2.0]), np.array([0.0, 3.0, 4.0])])
    np.testing.assert_allclose(layers[0], [5 / 12, 10 / 12, 10 / 12], rtol=1e-9)
    np.testing.assert_allclose(layers[0], [0.4167, 0.8333, 0.8333], atol=5e-5)
    np.testing.assert_allclose(layers[1], [0.0, 0.75, 1.0], rtol=1e-9)


def test_normalisation_degenerate_inputs() -> None:
    zero_layer = normalise_importance([np.zeros(2), np.array([3.0, 4.0])])
    np.testing.assert_allclose(zero_layer[0], [0.0, 0.0])
    np.testing.assert_allclose(zero_layer[1], [0.75, 1.0])
    equal = normalise_importance([np.ones(4)])
    np.testing.assert_array_equal(equal[0], np.zeros(4))
    with pytest.raises(ValueError):
        normalise_importance([np.array([1.0, -1.0])])
    with pytest.raises(ValueError):
        normalise_importance([])


def test_largest_prunable_fraction_stops_at_first_drop() -> None:
    agreements = [1.0, 1.0, 0.995, 0.99, 0.985, 0.999, 0.9, 0.8, 0.5, 0.2, 0.0]
    assert largest_prunable_fraction(FRACTIONS, agreements) == 0.3
    assert largest_prunable_fraction(FRACTIONS[::-1], agreements[::-1]) == 0.3
    assert largest_prunable_fraction(FRACTIONS, agreements, threshold=0.9) == 0.6
    assert largest_prunable_fraction(FRACTIONS, [0.98] * 11) == 0.0
    assert largest_prunable_fraction(FRACTIONS, [1.0] * 11) == 1.0


def test_rankdata_averages_ties() -> None:
    np.testing.assert_array_equal(rankdata(np.array([10, 20, 20, 5])), [2, 3.5, 3.5, 1])
    np.testing.assert_array_equal(rankdata(np.array([7, 7, 7])), [2, 2, 2])


def test_spearman_values() -> None:
    a = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert spearman(a, a**3) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    # ranks (1, 2.5, 2.5, 4) and (1, 3, 2, 4): Pearson by hand = 4.5 / sqrt(4.5 * 5)
    expected = 4.5 / np.sqrt(4.5 * 5.0)
    assert spearman(np.array([1, 2, 2, 3]), np.array([1, 3, 2, 4])) == pytest.approx(expected)
    assert np.isnan(spearman(np.ones(4), a[:4]))


def test_spearman_matches_scipy_with_ties() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 6, 40), rng.integers(0, 6, 40) + rng.integers(0, 2, 40)
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, rel=1e-12)


def test_spearman_interval_equals_a_loop_over_resampled_images() -> None:
    rng = np.random.default_rng(0)
    effect = np.linspace(0.1, 2.0, 6)[:, None]
    gradient = effect * rng.uniform(0.5, 1.5, (6, 10))
    delta = effect * rng.uniform(0.2, 1.8, (6, 10))
    spec = IntervalSpec(resamples=400, seed=2)
    low, high = spearman_interval(gradient, delta, spec)
    draws = [
        spearman(gradient[:, i].mean(1), delta[:, i].mean(1))
        for i in np.random.default_rng(2).integers(0, 10, size=(400, 10))
    ]
    np.testing.assert_allclose([low, high], np.percentile(draws, [2.5, 97.5]), rtol=1e-12)
    point = spearman(gradient.mean(1), delta.mean(1))
    assert low <= point <= high and low < high


def test_spearman_interval_of_images_that_all_agree_is_a_point() -> None:
    gradient = np.tile(np.arange(1.0, 6.0)[:, None], (1, 4))
    low, high = spearman_interval(gradient, gradient**2)
    assert low == high == 1.0
