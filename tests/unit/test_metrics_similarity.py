"""Oracles of METRICS.md §4: linear CKA (biased and debiased), correlation, redundancy."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from hooks import GroupSums, Moments
from inspector.metrics import (
    biased_cka_from_moments,
    correlation_from_covariance,
    debiased_cka_from_sums,
    linear_cka,
    participation_ratio,
    redundancy_summary,
)

RTOL = 1e-6


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 5))
    y = x[:, :4] @ rng.standard_normal((4, 4)) + 1.5 * rng.standard_normal((60, 4))
    return x, y


@pytest.mark.parametrize("debiased", [False, True])
def test_cka_of_a_representation_with_itself_is_one(
    data: tuple[np.ndarray, np.ndarray], debiased: bool
) -> None:
    x, _ = data
    np.testing.assert_allclose(linear_cka(x, x, debiased), 1.0, rtol=RTOL)


@pytest.mark.parametrize("debiased", [False, True])
def test_cka_invariances(data: tuple[np.ndarray, np.ndarray], debiased: bool) -> None:
    x, y = data
    rng = np.random.default_rng(1)
    reference = linear_cka(x, y, debiased)
    assert 0.1 < reference < 0.9  # a non-trivial pair, so the checks below can fail
    orthogonal, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    np.testing.assert_allclose(linear_cka(x, y @ orthogonal, debiased), reference, rtol=RTOL)
    rotation, _ = np.linalg.qr(rng.standard_normal((5, 5)))
    np.testing.assert_allclose(linear_cka(x, x @ rotation, debiased), 1.0, rtol=RTOL)
    np.testing.assert_allclose(linear_cka(x, 3.7 * y, debiased), reference, rtol=RTOL)
    shift = 100 * rng.standard_normal(4)
    np.testing.assert_allclose(linear_cka(x, y + shift, debiased), reference, rtol=RTOL)
    general = np.diag([1.0, 4.0, 0.2, 9.0]) @ rng.standard_normal((4, 4))
    assert abs(linear_cka(x, y @ general, debiased) - reference) > 1e-2


def test_biased_cka_of_independent_features_is_far_from_zero() -> None:
    rng = np.random.default_rng(2)
    values = [
        linear_cka(rng.standard_normal((100, 10)), rng.standard_normal((100, 10)), False)
        for _ in range(100)
    ]
    np.testing.assert_allclose(np.mean(values), 0.0909, atol=0.005)


def test_debiased_cka_of_independent_features_is_near_zero() -> None:
    rng = np.random.default_rng(3)
    values = [
        linear_cka(rng.standard_normal((500, 10)), rng.standard_normal((500, 10)), True)
        for _ in range(40)
    ]
    assert abs(np.mean(values)) < 0.02
    # Tighter than METRICS.md: the biased estimate here is ≈ 0.0196 and must not pass.
    assert abs(np.mean(values)) < 0.003


def unbiased_hsic_by_u_statistic(k: np.ndarray, l: np.ndarray) -> float:  # noqa: E741
    """Song et al. (2012) HSIC₁ as the mean over ordered distinct index 4-tuples."""
    total, count = 0.0, 0
    for i, j, q, r in itertools.permutations(range(k.shape[0]), 4):
        total += k[i, j] * l[i, j] + k[i, j] * l[q, r] - 2 * k[i, j] * l[i, q]
        count += 1
    return total / count


def test_debiased_cka_matches_the_u_statistic() -> None:
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((7, 3)), rng.standard_normal((7, 2))
    x[:, 1] += x[:, 0]
    y[:, 0] += 2 * x[:, 0]
    k, l = x @ x.T, y @ y.T  # noqa: E741
    expected = unbiased_hsic_by_u_statistic(k, l) / np.sqrt(
        unbiased_hsic_by_u_statistic(k, k) * unbiased_hsic_by_u_statistic(l, l)
    )
    np.testing.assert_allclose(linear_cka(x, y, True), expected, rtol=1e-9)


def grouped_data(rows: int, groups: int, size: int) -> np.ndarray:
    """Groups sharing a signal to different degrees, with large per-feature offsets."""
    rng = np.random.default_rng(5)
    shared = rng.standard_normal((rows, size))
    parts = [
        shared @ rng.standard_normal((size, size)) * (g % 3)
        + rng.standard_normal((rows, size))
        + 10 * rng.standard_normal(size)
        for g in range(groups)
    ]
    return np.concatenate(parts, axis=1)


def test_debiased_cka_from_streamed_sums_matches_the_gram_estimator() -> None:
    groups, size = 4, 3
    x = grouped_data(230, groups, size)  # large per-feature offsets: the sums are uncentred
    left = GroupSums(groups, size)
    for start, stop in ((0, 50), (50, 121), (121, 200)):
        left.update(torch.from_numpy(x[start:stop]))
    right = GroupSums(groups, size, shift=left.shift)  # sums merge about one shift
    right.update(torch.from_numpy(x[200:]).float().double())
    matrix = debiased_cka_from_sums(**left.merge(right).state(), groups=groups, size=size)
    expected = np.array(
        [
            [
                linear_cka(x[:, h * size : (h + 1) * size], x[:, g * size : (g + 1) * size], True)
                for g in range(groups)
            ]
            for h in range(groups)
        ]
    )
    assert np.ptp(expected[~np.eye(groups, dtype=bool)]) > 0.1  # distinct pairs
    np.testing.assert_allclose(matrix, expected, rtol=1e-6, atol=1e-7)


def test_biased_cka_from_moments_matches_the_data_estimator() -> None:
    groups, size = 3, 4
    x = grouped_data(150, groups, size)
    moments = Moments(groups * size)
    for start in range(0, 150, 40):
        moments.update(torch.from_numpy(x[start : start + 40]))
    matrix = biased_cka_from_moments(moments.state()["comoment"], groups, size)
    for h, g in itertools.product(range(groups), repeat=2):
        xh, xg = x[:, h * size : (h + 1) * size], x[:, g * size : (g + 1) * size]
        np.testing.assert_allclose(matrix[h, g], linear_cka(xh, xg, False), rtol=1e-9)


def test_constant_group_gives_nan() -> None:
    x = grouped_data(40, 2, 2)
    x[:, 2:] = 1.0
    sums = GroupSums(2, 2)
    sums.update(torch.from_numpy(x))
    matrix = debiased_cka_from_sums(**sums.state(), groups=2, size=2)
    assert np.isfinite(matrix[0, 0])
    assert np.isnan(matrix[1]).all()
    assert np.isnan(biased_cka_from_moments(np.cov(x.T), 2, 2)[1]).all()


def test_unresolvable_group_gives_nan_not_noise() -> None:
    # With mean / std = 1e4, sums about zero cannot resolve the spread at all.
    x = grouped_data(400, 2, 2)
    x[:, 2:] = 1e4 + np.random.default_rng(8).standard_normal((400, 2))
    sums = GroupSums(2, 2, shift=torch.zeros(4, dtype=torch.float64))
    sums.update(torch.from_numpy(x))
    matrix = debiased_cka_from_sums(**sums.state(), groups=2, size=2)
    np.testing.assert_allclose(matrix[0, 0], 1.0, rtol=RTOL)
    assert np.isnan(matrix[1]).all()
    # The default shift (the first batch's mean) resolves the same data.
    shifted = GroupSums(2, 2)
    shifted.update(torch.from_numpy(x))
    resolved = debiased_cka_from_sums(**shifted.state(), groups=2, size=2)
    expected = linear_cka(x[:, :2], x[:, 2:], True)
    np.testing.assert_allclose(resolved[0, 1], expected, rtol=1e-6, atol=1e-9)


def test_correlation_from_covariance() -> None:
    cov = np.array([[4.0, 2.0, 0.0], [2.0, 9.0, 0.0], [0.0, 0.0, 0.0]])
    corr = correlation_from_covariance(cov)
    np.testing.assert_allclose(corr[:2, :2], [[1.0, 1 / 3], [1 / 3, 1.0]], rtol=RTOL)
    assert np.isnan(corr[2]).all()
    assert np.isnan(corr[:, 2]).all()


def test_participation_ratio_of_planted_rank_8_covariance() -> None:
    rng = np.random.default_rng(6)
    basis, _ = np.linalg.qr(rng.standard_normal((40, 8)))
    covariance = basis @ basis.T
    np.testing.assert_allclose(participation_ratio(covariance), 8.0, rtol=RTOL)
    eigenvalues = np.linalg.eigvalsh(covariance)
    np.testing.assert_allclose(participation_ratio(eigenvalues), 8.0, rtol=RTOL)
    np.testing.assert_allclose(participation_ratio(np.array([3.0, 1.0])), 16 / 10, rtol=RTOL)


def orthogonal_channels(samples: int, channels: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    raw = rng.standard_normal((samples, channels))
    basis, _ = np.linalg.qr(raw - raw.mean(0))  # centred, exactly uncorrelated channels
    return basis


def test_copied_channels_halve_the_effective_units() -> None:
    channels = orthogonal_channels(200, 32)
    activations = np.concatenate([channels, channels], axis=1)
    corr = correlation_from_covariance(np.cov(activations.T))
    np.testing.assert_allclose(participation_ratio(corr), 32.0, rtol=RTOL)
    summary = redundancy_summary(corr, absolute=True)
    assert (summary.units, summary.excluded_units) == (64, 0)
    np.testing.assert_allclose(summary.effective_units, 32.0, rtol=RTOL)
    np.testing.assert_allclose(summary.effective_fraction, 0.5, rtol=RTOL)
    np.testing.assert_allclose(summary.redundancy, 0.5, rtol=RTOL)
    np.testing.assert_allclose(summary.mean_max_similarity, 1.0, rtol=RTOL)
    np.testing.assert_allclose(summary.mean_similarity, 1 / 63, atol=1e-9)


def test_absolute_counts_anticorrelated_channels_as_redundant() -> None:
    channels = orthogonal_channels(100, 4)
    corr = correlation_from_covariance(np.cov(np.concatenate([channels, -channels], 1).T))
    signed, absolute = redundancy_summary(corr), redundancy_summary(corr, absolute=True)
    np.testing.assert_allclose(absolute.mean_max_similarity, 1.0, rtol=RTOL)
    np.testing.assert_allclose(signed.mean_max_similarity, 0.0, atol=1e-9)
    np.testing.assert_allclose(signed.effective_units, 4.0, rtol=RTOL)
    np.testing.assert_allclose(absolute.effective_units, 4.0, rtol=RTOL)


def test_dead_channels_are_excluded_from_the_summary() -> None:
    channels = np.concatenate([orthogonal_channels(100, 6), np.zeros((100, 2))], axis=1)
    summary = redundancy_summary(correlation_from_covariance(np.cov(channels.T)), absolute=True)
    assert (summary.units, summary.excluded_units) == (6, 2)
    np.testing.assert_allclose(summary.effective_units, 6.0, rtol=RTOL)
    np.testing.assert_allclose(summary.redundancy, 0.0, atol=1e-9)


def test_channel_redundancy_accepts_a_comoment_symmetric_up_to_rounding() -> None:
    """A streamed co-moment whose mean dwarfs its spread (DPN at random init, found by the
    main-job sweep) is symmetric only up to rounding: the analysis still runs, with the
    participation ratio of the symmetric part."""
    from inspector.analyzers import REGISTRY, AnalysisInputs, LayerInput

    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 6))
    comoment = (x - x.mean(0)).T @ (x - x.mean(0))
    skewed = comoment + 1e-6 * np.abs(comoment).max() * np.triu(np.ones((6, 6)), 1)
    layer = LayerInput(
        name="conv",
        kind="channel",
        attrs={"kind": "channel", "channels": 6},
        moments={"count": np.asarray(50), "mean": x.mean(0), "comoment": skewed},
    )
    result = REGISTRY["channel_redundancy"]().compute(AnalysisInputs(layers={"conv": layer}))
    fraction = result.layers["conv"].covariance_effective_fraction
    symmetric = (skewed + skewed.T) / 2
    expected = np.trace(symmetric) ** 2 / np.sum(symmetric**2) / 6
    assert fraction == pytest.approx(expected, rel=1e-12)
