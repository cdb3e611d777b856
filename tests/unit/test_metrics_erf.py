"""Oracles of METRICS.md §3 on synthetic effective-receptive-field maps."""

from __future__ import annotations

import numpy as np
import pytest

from inspector.analyzers._intervals import bootstrap_indices
from inspector.metrics import (
    IntervalSpec,
    erf_axis_std,
    erf_mean_distance,
    erf_radius,
    radius_intervals,
    replknet_area_ratios,
)

RTOL = 1e-6


def box_stack(n: int, k: int) -> np.ndarray:
    """ERF of ``n`` stacked uniform ``k × k`` convolutions: the n-fold convolution of a box."""
    line = np.ones(1)
    for _ in range(n):
        line = np.convolve(line, np.ones(k) / k)
    return np.outer(line, line)


@pytest.fixture(scope="module")
def stacked() -> np.ndarray:
    erf = box_stack(10, 3)
    assert erf.shape == (21, 21)  # theoretical RF = 1 + n (k − 1)
    return erf


def test_box_stack_variance(stacked: np.ndarray) -> None:
    std_y, std_x = erf_axis_std(stacked, (10, 10))
    np.testing.assert_allclose([std_y**2, std_x**2], 10 * (3**2 - 1) / 12, rtol=RTOL)
    np.testing.assert_allclose([std_y, std_x], 2.5820, atol=5e-5)


def test_box_stack_mean_distance(stacked: np.ndarray) -> None:
    expected = (
        sum(
            stacked[i, j] * np.sqrt((i - 10) ** 2 + (j - 10) ** 2)
            for i in range(21)
            for j in range(21)
        )
        / stacked.sum()
    )
    np.testing.assert_allclose(erf_mean_distance(stacked, (10, 10)), expected, rtol=RTOL)
    # Near-Gaussian: a 2-d Gaussian's mean radius is σ sqrt(π / 2).
    np.testing.assert_allclose(expected, np.sqrt(20 / 3) * np.sqrt(np.pi / 2), rtol=0.02)


def disc_radius_by_search(erf: np.ndarray, centre: tuple[float, float], fraction: float) -> float:
    rows, cols = np.indices(erf.shape)
    radii = np.hypot(rows - centre[0], cols - centre[1])
    for radius in np.unique(radii):
        if erf[radii <= radius].sum() >= fraction * erf.sum() * (1 - 1e-12):
            return float(radius)
    raise AssertionError("no disc holds the mass")


@pytest.mark.parametrize("fraction", [0.5, 0.9, 1.0])
def test_radius_matches_disc_search(stacked: np.ndarray, fraction: float) -> None:
    expected = disc_radius_by_search(stacked, (10, 10), fraction)
    assert erf_radius(stacked, (10, 10), fraction) == expected
    rng = np.random.default_rng(int(100 * fraction))
    noisy = rng.random((15, 12))
    assert erf_radius(noisy, (6.5, 4), fraction) == disc_radius_by_search(noisy, (6.5, 4), fraction)


def test_radius_grows_with_fraction(stacked: np.ndarray) -> None:
    r50, r90 = erf_radius(stacked, (10, 10), 0.5), erf_radius(stacked, (10, 10), 0.9)
    assert 0 < r50 < r90 <= np.hypot(10, 10)


def test_single_pixel_erf() -> None:
    erf = np.zeros((9, 9))
    erf[4, 4] = 3.0
    assert erf_mean_distance(erf, (4, 4)) == 0.0
    assert erf_axis_std(erf, (4, 4)) == (0.0, 0.0)
    for fraction in (0.5, 0.9, 1.0):
        assert erf_radius(erf, (4, 4), fraction) == 0.0


@pytest.mark.parametrize("bad", [np.zeros((5, 5)), -np.ones((5, 5)), np.ones(5)])
def test_unusable_maps_are_rejected(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        erf_mean_distance(bad, (2, 2))


def test_replknet_all_ones_oracle() -> None:
    ratios = replknet_area_ratios(np.ones((1024, 1024)))
    sides = {t: value[0] for t, value in ratios.items() if value is not None}
    assert sides == {0.2: 459, 0.3: 561, 0.5: 725, 0.99: 1019}
    np.testing.assert_allclose(
        [ratios[t][1] for t in (0.2, 0.3, 0.5, 0.99)],  # type: ignore[index]
        [0.200921, 0.300141, 0.501275, 0.990258],
        rtol=2e-6,
    )


def replknet_loop(data: np.ndarray, thresh: float) -> tuple[int, float] | None:
    """RepLKNet's square search written out step by step, for comparison."""
    h, w = data.shape
    total = data.sum()
    for i in range(1, h // 2):
        inside = data[h // 2 - i : h // 2 + 1 + i, w // 2 - i : w // 2 + 1 + i].sum()
        if inside / total > thresh:
            return 2 * i + 1, (2 * i + 1) / h * (2 * i + 1) / w
    return None


@pytest.mark.parametrize("size", [64, 65])
def test_replknet_matches_the_loop_on_a_real_looking_map(size: int) -> None:
    rng = np.random.default_rng(size)
    rows, cols = np.indices((size, size))
    erf = 50 * np.exp(-((rows - size / 2) ** 2 + (cols - size / 2) ** 2) / 60.0)
    erf = erf + rng.random((size, size))
    scaled = np.log10(erf + 1)
    scaled /= scaled.max()
    ratios = replknet_area_ratios(erf)
    for t in (0.2, 0.3, 0.5, 0.99):
        found, expected = ratios[t], replknet_loop(scaled, t)
        assert (found and found[:2]) == expected
        # saturated: the largest square the search tests, or none exceeds t
        assert found is None or found[2] == (found[0] == 2 * (size // 2 - 1) + 1)


def test_replknet_quirks() -> None:
    delta = np.zeros((32, 32))
    delta[16, 16] = 1.0  # the lower-right central pixel of an even map
    ratios = replknet_area_ratios(delta)
    assert all(value == (3, 9 / 1024, False) for value in ratios.values())  # 1×1 never tested
    assert replknet_area_ratios(np.ones((3, 3))) == dict.fromkeys((0.2, 0.3, 0.5, 0.99))


def _profiles(maps: np.ndarray, centre: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Per-map mass at each distinct distance from the centre (as the ERF pass keeps it)."""
    dy = np.arange(maps.shape[1])[:, None] - centre[0]
    dx = np.arange(maps.shape[2])[None, :] - centre[1]
    radii, ring = np.unique(np.hypot(dy, dx).ravel(), return_inverse=True)
    profile = np.zeros((maps.shape[0], radii.size))
    for i, m in enumerate(maps):
        np.add.at(profile[i], ring, m.ravel())
    return profile, radii


def test_radius_intervals_equal_a_loop_of_erf_radius_over_resampled_mean_maps() -> None:
    rng = np.random.default_rng(3)
    centre = (7.0, 9.5)
    dy = np.arange(16)[:, None] - centre[0]
    dx = np.arange(20)[None, :] - centre[1]
    # per-image maps of different widths: the radii vary from image to image
    maps = np.stack([np.exp(-np.hypot(dy, dx) / w) for w in rng.uniform(0.5, 6, 12)])
    profile, radii = _profiles(maps, centre)
    spec = IntervalSpec(resamples=300, seed=5)
    (low50, high50), (low90, high90) = radius_intervals(profile, radii, (0.5, 0.9), spec)
    draws = np.array(
        [
            [erf_radius(maps[i].mean(0), centre, f) for f in (0.5, 0.9)]
            for i in bootstrap_indices(len(maps), spec.resamples, spec.seed)
        ]
    )
    expected = np.percentile(draws, [2.5, 97.5], axis=0)
    np.testing.assert_allclose([low50, high50], expected[:, 0], rtol=1e-12)
    np.testing.assert_allclose([low90, high90], expected[:, 1], rtol=1e-12)
    assert low50 < high50 and low90 < high90
    point = [erf_radius(maps.mean(0), centre, f) for f in (0.5, 0.9)]
    assert low50 <= point[0] <= high50 and low90 <= point[1] <= high90


def test_identical_images_give_a_zero_width_radius_interval(stacked: np.ndarray) -> None:
    profile, radii = _profiles(np.stack([stacked] * 6), (10, 10))
    for fraction, (low, high) in zip((0.5, 0.9), radius_intervals(profile, radii), strict=True):
        assert low == high == erf_radius(stacked, (10, 10), fraction)
