"""METRICS.md §7 oracles for the shared interval primitives."""

from __future__ import annotations

import numpy as np

from inspector.analyzers import IntervalSpec, bootstrap, bootstrap_mean


def test_a_constant_per_image_value_has_a_zero_width_interval() -> None:
    low, high = bootstrap_mean(np.full((9, 3), 2.5))
    np.testing.assert_array_equal(low, 2.5)
    np.testing.assert_array_equal(high, 2.5)


def test_percentile_bootstrap_of_the_mean_covers_93_to_97_percent() -> None:
    """100 i.i.d. normal per-image values, 1000 simulated runs (seeded)."""
    rng = np.random.default_rng(1)
    hits = 0
    for run in range(1000):
        low, high = bootstrap_mean(rng.normal(1.0, 2.0, size=100), IntervalSpec(seed=run))
        hits += bool(low <= 1.0 <= high)
    assert 0.93 <= hits / 1000 <= 0.97


def test_generic_bootstrap_equals_the_vectorised_mean_and_is_seeded() -> None:
    values = np.random.default_rng(2).normal(size=(20, 4))
    fast = bootstrap_mean(values, IntervalSpec(seed=3))
    slow = bootstrap(20, lambda i: values[i].mean(0), IntervalSpec(seed=3))
    np.testing.assert_allclose(fast, slow, rtol=1e-12)
    other = bootstrap_mean(values, IntervalSpec(seed=4))
    assert not np.allclose(fast, other)
    assert np.all(fast[0] <= values.mean(0)) and np.all(values.mean(0) <= fast[1])


def test_nan_images_are_ignored_and_all_nan_stays_nan() -> None:
    values = np.array([[1.0, np.nan], [3.0, np.nan], [np.nan, np.nan]])
    low, high = bootstrap_mean(values)
    # resampled means of the finite images are 1, 2 or 3: the tails reach both values
    assert (low[0], high[0]) == (1.0, 3.0)
    assert np.isnan(low[1]) and np.isnan(high[1])
