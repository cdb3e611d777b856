"""Intervals, sample sizes and the verdict (METRICS.md §4 sampling, §7 uncertainty)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import hooks
from hooks._accumulate import GroupSums
from hooks._image_groups import _BLOCK_KEYS as BLOCK_KEYS
from hooks._image_groups import ImageGroups
from hooks._rows import stratified_positions
from inspector.analyzers import (
    ChannelRedundancyLayer,
    ChannelRedundancyResult,
    HeadRedundancyLayer,
    HeadRedundancyResult,
    RedundancyStats,
)
from inspector.analyzers._group_intervals import batch_means_interval, group_cka, t_quantile
from inspector.analyzers._similarity import (
    corrected_participation_ratio,
    debiased_cka_from_blocks,
    debiased_cka_from_sums,
    participation_ratio,
)
from inspector.present._rows import RunResults, interval_text, precision
from inspector.present._verdict import verdict

# -- sampling (METRICS §4) ------------------------------------------------------------

CHI2_999 = {111: 161.6}  # chi-square 0.999 quantile at 111 degrees of freedom


def _chi_square(counts: np.ndarray) -> float:
    expected = counts.sum() / counts.size
    return float(((counts - expected) ** 2 / expected).sum())


def test_positions_cover_a_112_grid_uniformly() -> None:
    """64 positions per image of a 112 x 112 map, 2000 images: rows and columns uniform
    (chi-square below the 0.999 quantile), every cell reachable; the old raster lattice
    hits only 16 columns and fails."""
    side, images = 112, 2000
    draws = stratified_positions(side * side, 64, images, torch.Generator().manual_seed(1))
    rows, cols = np.divmod(draws.numpy().ravel(), side)
    for axis in (rows, cols):
        counts = np.bincount(axis, minlength=side)
        assert _chi_square(counts) < CHI2_999[side - 1]
    assert len(np.unique(draws.numpy())) > 0.99 * side * side * (
        1 - math.exp(-images * 64 / side**2)
    )
    lattice = torch.linspace(0, side * side - 1, 64).round().long().numpy()
    lattice_cols = np.bincount(np.tile(lattice % side, images), minlength=side)
    assert (lattice_cols > 0).sum() == 16 and _chi_square(lattice_cols) > 10 * CHI2_999[111]


def test_position_draws_are_seeded_and_stratified() -> None:
    a = stratified_positions(196, 8, 3, torch.Generator().manual_seed(5))
    b = stratified_positions(196, 8, 3, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    strata = (a.double() * 8 / 196).floor()  # one draw in each of the 8 strata
    assert torch.equal(strata, torch.arange(8, dtype=torch.float64).expand(3, 8))


# -- corrected participation ratio (METRICS §4) -----------------------------------------


@pytest.mark.parametrize("p", [128, 256])
def test_corrected_participation_ratio_at_n_equal_p(p: int) -> None:
    """Planted covariance (eigenvalues ~ k^-0.7), n = p rows: the corrected value is
    within 5 % of the population participation ratio (mean of 6 seeds); the raw is not."""
    rng = np.random.default_rng(p)
    lam = 1 / np.arange(1, p + 1) ** 0.7
    q, _ = np.linalg.qr(rng.normal(size=(p, p)))
    cov = (q * lam) @ q.T
    d = np.sqrt(np.diag(cov))
    population = participation_ratio(cov / np.outer(d, d))
    raw, corrected = [], []
    for _ in range(6):
        x = rng.multivariate_normal(np.zeros(p), cov, size=p)
        r = np.corrcoef(x.T)
        raw.append(participation_ratio(r))
        corrected.append(corrected_participation_ratio(r, p))
    assert abs(np.mean(corrected) / population - 1) < 0.05
    assert abs(np.mean(raw) / population - 1) > 0.10


# -- image-group accumulators (METRICS §7) -----------------------------------------------


def _sums_close(a: dict, b: dict) -> None:
    for key in ("count", "sum", "cross", "weighted", "norms", "shift"):
        np.testing.assert_allclose(a[key], b[key], rtol=1e-10, atol=1e-9, err_msg=key)


def _blocks_close(a: dict, b: dict) -> None:
    """The same groups, the same rows each, the same CKA each (raw pieces depend on the
    shift the sums were taken about; debiased CKA does not)."""
    assert a.keys() == b.keys()
    for key in ("layout", "closed", "count"):
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    for mine, theirs in zip(group_cka(a), group_cka(b), strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=1e-9, atol=1e-12)


def test_image_groups_are_contiguous_merge_exactly_and_equal_each_groups_own_sums() -> None:
    rng = np.random.default_rng(0)
    rows = torch.from_numpy(rng.normal(size=(30 * 16, 12)) + 5)  # 30 images of 16 rows
    whole = ImageGroups(7, 30, 3, 4)
    for start in range(0, 30, 4):  # batches of 4 (the last of 2)
        chunk = rows[start * 16 : min(start + 4, 30) * 16]
        whole.update(chunk, chunk.shape[0] // 16, first=start)
        assert len(whole.open) <= 1  # one group in progress: memory is not G x p x p
    first, second = ImageGroups(7, 30, 3, 4), ImageGroups(7, 30, 3, 4)
    first.update(rows[: 14 * 16], 14, first=0)  # a checkpoint / one rank
    second.update(rows[14 * 16 :], 16, first=14)  # the rest / the other rank
    assert first.open and second.open  # images 13 | 14 split a group between them
    merged = ImageGroups.from_state(first.state()).merge(ImageGroups.from_state(second.state()))
    assert not merged.open and sorted(merged.closed) == list(range(7))
    _blocks_close(whole.state(), merged.state())
    # image i belongs to group i * 7 // 30: consecutive images, sizes 5 or 4
    members = [sum(1 for i in range(30) if i * 7 // 30 == g) for g in range(7)]
    assert [merged.members(g) for g in range(7)] == members
    assert merged.state()["count"].tolist() == [16 * m for m in members]
    # each closed group's pieces give exactly the CKA of that group's own rows
    state = merged.state()
    start = 0
    for position, size in enumerate(members):
        own = GroupSums(3, 4)
        own.update(rows[start * 16 : (start + size) * 16])
        start += size
        pieces = {k: state[k][position] for k in BLOCK_KEYS}
        np.testing.assert_allclose(
            debiased_cka_from_blocks(**pieces),
            debiased_cka_from_sums(**own.state(), groups=3, size=4),
            rtol=1e-8,
        )


def test_batch_means_interval_of_identical_groups_has_zero_width() -> None:
    """A constant per-group value: zero spread, a zero-width interval (§7 oracle)."""
    rng = np.random.default_rng(1)
    block = torch.from_numpy(rng.normal(size=(16, 8)))
    groups = ImageGroups(5, 5, 2, 4)
    groups.update(block.repeat(5, 1), 5, first=0)  # five images with the same rows
    per_group = group_cka(groups.state())
    assert len(per_group) == 5
    point = per_group[0][0, 1:]
    low, high, count = batch_means_interval(point, [cka[0, 1:] for cka in per_group])
    assert count == 5
    np.testing.assert_allclose(low, point, rtol=1e-12)
    np.testing.assert_allclose(high, point, rtol=1e-12)


def test_t_quantiles() -> None:
    assert t_quantile(1) == pytest.approx(12.706)
    assert t_quantile(8) == pytest.approx(2.306)
    assert t_quantile(19) == pytest.approx(2.093)
    assert t_quantile(1000) == pytest.approx(1.96, abs=0.01)


@pytest.mark.slow
def test_batch_means_interval_covers_the_population_cka() -> None:
    """Debiased CKA of two 4-wide units with planted dependence and an image effect
    (rows of one image share a random offset): the 95 % interval from 20 one-image
    groups, around the all-image estimate, covers the population value in about 95 % of
    400 simulated runs."""
    rng = np.random.default_rng(2)
    mix = 0.5
    x = rng.normal(size=(400_000, 4))
    y = mix * x + rng.normal(size=x.shape)
    pop = float(np.sum((x.T @ y) ** 2) / np.sqrt(np.sum((x.T @ x) ** 2) * np.sum((y.T @ y) ** 2)))
    hits, runs = 0, 400
    for _ in range(runs):
        groups, total = ImageGroups(20, 20, 2, 4), GroupSums(2, 4)
        for image in range(20):
            a = rng.normal(size=(24, 4))
            rows = torch.from_numpy(np.hstack([a, mix * a + rng.normal(size=a.shape)]))
            groups.update(rows, 1, first=image)
            total.update(rows)
        point = debiased_cka_from_sums(**total.state(), groups=2, size=4)[0, 1]
        low, high, _ = batch_means_interval(point, [c[0, 1] for c in group_cka(groups.state())])
        hits += bool(low <= pop <= high)
    assert 0.90 <= hits / runs <= 0.99


def test_capture_keeps_image_groups_through_restore() -> None:
    """A capture interrupted after 3 of 7 images and restored gives the pieces of one
    uninterrupted capture (positions follow the image index, groups too)."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model("test_vit", pretrained=False).eval()
    images = torch.randn(7, 3, *model.default_cfg["input_size"][-2:])
    options = hooks.CaptureOptions(
        channels=None, keep_maps=0, positions=16, image_groups=4, images=7
    )
    with torch.no_grad(), hooks.capture(model, options) as one:
        model(images[:3])
        model(images[3:])
    with torch.no_grad(), hooks.capture(model, options) as first:
        model(images[:3])
    for layer in first.state().layers.values():  # groups 0-1 of images 0,0,1,1,2,2,3
        assert layer.image_groups is not None
        assert layer.image_groups["closed"].tolist() == [0]
        assert layer.image_groups["open"].tolist() == [1]
    with torch.no_grad(), hooks.capture(model, options) as second:
        second.restore(first.state())
        model(images[3:])
    for name, layer in one.state().layers.items():
        assert layer.image_groups is not None and "open" not in layer.image_groups
        assert layer.image_groups["closed"].tolist() == [0, 1, 2, 3]
        _blocks_close(dict(layer.image_groups), dict(second.state().layers[name].image_groups))
        np.testing.assert_allclose(
            layer.moments["comoment"], second.state().layers[name].moments["comoment"],
            rtol=1e-9, atol=1e-9,
        )  # fmt: skip


# -- printing with the interval's precision (§7) -----------------------------------------


def test_precision_follows_the_interval() -> None:
    assert precision(0.4, 0.6) == 1
    assert precision(0.47, 0.53) == 2
    assert precision(0.497, 0.503) == 3
    assert interval_text(0.4833, 0.43, 0.52) == "0.48 [0.43, 0.52]"
    assert interval_text(0.4833, 0.3, 0.7) == "0.5 [0.3, 0.7]"
    assert interval_text(0.4833, math.nan, math.nan) == "0.48"


# -- the verdict (planted runs) ------------------------------------------------------------


def _stats(value: float, low: float, high: float, units: int) -> dict:
    effective = (1 - value) * units
    return {
        "units": units,
        "mean_similarity": 0.1,
        "mean_max_similarity": 0.2,
        "effective_units": effective,
        "effective_fraction": effective / units,
        "redundancy": value,
        "excluded_units": 0,
        "redundancy_low": low,
        "redundancy_high": high,
    }


def _planted(head: tuple[float, float, float], group: tuple[float, float, float]) -> RunResults:
    eye = np.eye(6)
    heads = HeadRedundancyResult(
        version="2",
        params={},
        layers={
            "blocks.0.attn": HeadRedundancyLayer(
                cka=eye, cka_biased=eye, covariance_effective_fraction=0.5, **_stats(*head, 6)
            )
        },
    )
    channels = ChannelRedundancyResult(
        version="2",
        params={},
        layers={
            "blocks.0.mlp.fc2": ChannelRedundancyLayer(
                covariance_effective_fraction=0.5,
                grouped_cka=eye,
                grouped=RedundancyStats(**_stats(*group, 6)),
                **_stats(0.9, 0.85, 0.95, 384),
            )
        },
    )
    return RunResults(None, None, None, heads, channels, None, None)


def test_verdict_equal_is_not_resolved() -> None:
    answer = verdict(_planted((0.31, 0.25, 0.37), (0.31, 0.26, 0.36)), 9)
    assert "not resolved at 9 images" in answer.blocks[0]
    assert "cannot be told apart" in answer.overall
    assert "0.31 [0.25, 0.37]" in answer.blocks[0]


def test_verdict_clearly_different() -> None:
    answer = verdict(_planted((0.10, 0.05, 0.15), (0.60, 0.55, 0.66)), 200)
    assert "channel groups are more redundant than heads" in answer.blocks[0]
    assert "more redundant than heads in 1 of 1 blocks" in answer.overall
    answer = verdict(_planted((0.60, 0.55, 0.66), (0.10, 0.05, 0.15)), 200)
    assert "heads are more redundant than channel groups" in answer.blocks[0]


def test_verdict_overlapping_intervals_are_not_resolved() -> None:
    answer = verdict(_planted((0.31, 0.20, 0.40), (0.45, 0.35, 0.55)), 9)
    assert "the intervals overlap: not resolved at 9 images" in answer.blocks[0]
    assert "not resolved at 9 images in 1" in answer.overall


def test_each_closed_group_keeps_the_summary_of_its_own_covariance() -> None:
    rng = np.random.default_rng(3)
    rows = torch.from_numpy(rng.normal(size=(6 * 10, 8)) @ rng.normal(size=(8, 8)) + 3)
    seen: list[tuple[np.ndarray, int]] = []

    def summary(covariance: np.ndarray, count: int) -> np.ndarray:
        seen.append((covariance.copy(), count))
        return np.array([covariance.trace(), float(count)])

    groups = ImageGroups(3, 6, 2, 4, summary)
    groups.update(rows[:30], 3, first=0)  # group 1 left open across the two batches
    groups = ImageGroups.from_state(groups.state(), summary)
    groups.update(rows[30:], 3, first=3)
    state = groups.state()
    assert state["closed"].tolist() == [0, 1, 2]
    for index, (covariance, count) in enumerate(seen):
        own = rows[index * 20 : (index + 1) * 20].numpy()
        np.testing.assert_allclose(covariance, np.cov(own.T), rtol=1e-9)
        assert count == 20
        np.testing.assert_allclose(state["summary"][index], [np.cov(own.T).trace(), 20])
    # merged elsewhere without the callback: that group's summary is NaN, not made up
    first, second = ImageGroups(3, 6, 2, 4, summary), ImageGroups(3, 6, 2, 4, summary)
    first.update(rows[:30], 3, first=0)
    second.update(rows[30:], 3, first=3)
    merged = ImageGroups.from_state(first.state()).merge(ImageGroups.from_state(second.state()))
    assert np.isnan(merged.state()["summary"][1]).all()
    assert np.isfinite(merged.state()["summary"][[0, 2]]).all()


def test_channel_correlation_summaries_carry_an_interval(tmp_path) -> None:
    from inspector import analyze

    run = analyze(
        "resnet18", out=tmp_path / "r.h5", weights="random", limit=6, batch_size=4,
        analyses=("channel_redundancy",), report=False, progress=False,
    )  # fmt: skip
    layers = run.result("channel_redundancy").layers
    checked = 0
    for layer in layers.values():
        if layer.redundancy_low is None:
            continue
        assert layer.image_groups == 6  # one group per image
        assert layer.redundancy_low <= layer.redundancy <= layer.redundancy_high
        assert layer.mean_similarity_low <= layer.mean_similarity <= layer.mean_similarity_high
        checked += 1
    assert checked >= len(layers) // 2


def test_correlation_summary_equals_the_analyzers_own_statistics() -> None:
    from inspector.analyzers import correlation_summary
    from inspector.analyzers._redundancy import _vector
    from inspector.analyzers._similarity import correlation_from_covariance

    rng = np.random.default_rng(4)
    x = rng.normal(size=(40, 30)) @ rng.normal(size=(30, 30))
    x[:, 3] = 0.0  # a dead channel
    covariance = np.cov(x.T)
    expected = _vector(correlation_from_covariance(covariance), absolute=True, rows=40)
    np.testing.assert_allclose(correlation_summary(covariance, 40), expected, rtol=1e-12)
    live = np.delete(np.delete(covariance, 3, 0), 3, 1)  # no dead channel: no subset copy
    expected = _vector(correlation_from_covariance(live), absolute=True, rows=40)
    scratch = live.copy()  # the capture's way: in the closing group's own array
    np.testing.assert_allclose(
        correlation_summary(scratch, 40, overwrite=True), expected, rtol=1e-12
    )
    assert not np.array_equal(scratch, live)  # it did work in place
