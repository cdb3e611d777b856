"""Similarity between units and how redundant a layer's units are (METRICS.md §4).

Linear CKA (Kornblith et al. 2019) compares two representations of the same samples.
The biased estimator is far from 0 for independent features that are wide relative to
the samples, so unit-vs-unit redundancy uses the debiased one: unbiased HSIC (Song et
al. 2012; Nguyen et al. 2021). For linear kernels ``K = X Xᵀ``, ``L = Y Yᵀ`` with
``K̃``, ``L̃`` their zero-diagonal copies,

    HSIC₁ = [tr(K̃L̃) + 1ᵀK̃1 · 1ᵀL̃1 / ((n−1)(n−2)) − 2/(n−2) · 1ᵀK̃L̃1] / (n(n−3)),

and every term is a closed form of the raw sums ``hooks.GroupSums`` streams:
``tr(K̃L̃) = ‖XᵀY‖²_F − Σ_i K_ii L_ii``, ``1ᵀK̃1 = ‖s_x‖² − tr K`` and
``1ᵀK̃L̃1 = s_xᵀ XᵀY s_y − s_xᵀ r_x − s_yᵀ r_y + Σ_i K_ii L_ii`` with ``s = Σ_i x_i``,
``r_x = Σ_i x_i ‖y_i‖²``. Unbiased HSIC is exactly invariant to shifting the features,
so the sums need no centring and merge by addition (in exact arithmetic: see
:func:`debiased_cka_from_sums` for what rounding costs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "RedundancySummary",
    "biased_cka_from_moments",
    "corrected_participation_ratio",
    "correlation_from_covariance",
    "debiased_cka_from_blocks",
    "debiased_cka_from_sums",
    "linear_cka",
    "participation_ratio",
    "redundancy_summary",
]


# Raw sums cancel: a self-HSIC below this share of its largest term is rounding noise.
_RESOLVABLE = 1e-11


def _unbiased_hsic(
    n: int | float,
    tr_kl: np.ndarray,
    ones_k: np.ndarray,
    ones_l: np.ndarray,
    ones_kl: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``(HSIC₁, magnitude of its largest term)``."""
    if n < 4:
        raise ValueError(f"debiased CKA needs at least 4 samples, got {n}")
    terms = (tr_kl, ones_k * ones_l / ((n - 1) * (n - 2)), 2.0 / (n - 2) * ones_kl)
    scale = np.maximum.reduce([np.abs(term) for term in terms]) / (n * (n - 3))
    return (terms[0] + terms[1] - terms[2]) / (n * (n - 3)), scale


def _cka_from_hsic(cross: np.ndarray, self_x: np.ndarray, self_y: np.ndarray) -> np.ndarray:
    # Debiased self-HSIC can come out <= 0 on tiny samples: no defined CKA there (NaN).
    valid = (self_x > 0) & (self_y > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(valid, cross / np.sqrt(np.where(valid, self_x * self_y, 1.0)), np.nan)


def linear_cka(x: np.ndarray, y: np.ndarray, debiased: bool) -> float:
    """Linear CKA between two representations of the same samples.

    The debiased estimator works on ``n × n`` Gram matrices: meant for checks and
    moderate ``n``; stream large data through ``hooks.GroupSums`` and
    :func:`debiased_cka_from_sums` instead.

    Args:
        x: ``[sample, p]`` data matrix.
        y: ``[sample, q]`` data matrix, rows the same samples as ``x``.
        debiased: Use unbiased HSIC (Song et al. 2012) instead of the biased
            ``‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F)`` on centred features.

    Returns:
        CKA in ``[0, 1]`` (biased); the debiased value can be slightly negative, and is NaN
        where a self-HSIC is not positive.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"linear_cka needs [sample, p] and [sample, q], got {x.shape}, {y.shape}")
    # Centring changes nothing in exact arithmetic for either estimator; it keeps sums small.
    x = x - x.mean(0)
    y = y - y.mean(0)
    if not debiased:
        cross = np.linalg.norm(y.T @ x) ** 2
        denominator = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
        return float(cross / denominator) if denominator > 0 else float("nan")
    n = x.shape[0]

    def hsic(gram_a: np.ndarray, gram_b: np.ndarray) -> float:
        a, b = gram_a.copy(), gram_b.copy()
        np.fill_diagonal(a, 0.0)
        np.fill_diagonal(b, 0.0)
        return float(_unbiased_hsic(n, np.sum(a * b), a.sum(), b.sum(), a.sum(0) @ b.sum(1))[0])

    gram_x, gram_y = x @ x.T, y @ y.T
    return float(
        _cka_from_hsic(
            np.asarray(hsic(gram_x, gram_y)),
            np.asarray(hsic(gram_x, gram_x)),
            np.asarray(hsic(gram_y, gram_y)),
        )
    )


def debiased_cka_from_sums(
    count: int,
    sum: np.ndarray,  # named as in GroupSums.state(), so **state can be passed
    cross: np.ndarray,
    weighted: np.ndarray,
    norms: np.ndarray,
    groups: int,
    size: int,
    shift: np.ndarray | None = None,
) -> np.ndarray:
    """Debiased linear CKA between every pair of column groups, from streamed raw sums.

    The sums may be taken about any fixed ``shift`` (the estimator is shift-invariant),
    so ``shift`` is accepted and not used.

    Args:
        count: Number of rows ``n``.
        sum: ``[p]`` column sums ``Σ_i x_i`` (``p = groups * size``).
        cross: ``[p, p]`` uncentred ``Σ_i x_i x_iᵀ``.
        weighted: ``[p, groups]``; column ``g`` is ``Σ_i x_i ‖x_i^g‖²``.
        norms: ``[groups, groups]``; ``Σ_i ‖x_i^h‖² ‖x_i^g‖²``.
        groups: Number of column groups (heads).
        size: Columns per group (``head_dim``).

    Returns:
        ``[groups, groups]`` symmetric CKA matrix. NaN rows and columns mark groups whose
        self-HSIC is not positive or is lost in rounding (below 1e-11 of the raw terms it
        cancels from): constant groups, or groups whose mean dwarfs their spread (relative
        error grows like ``(mean / std)⁴ · 1e-16``). Accumulating shifted data (any fixed
        per-feature shift, HSIC₁ is shift-invariant) keeps the sums resolvable.
    """
    p = groups * size
    s = np.asarray(sum, dtype=np.float64)
    c = np.asarray(cross, dtype=np.float64)
    r = np.asarray(weighted, dtype=np.float64)
    kl_diag = np.asarray(norms, dtype=np.float64)
    expected = {"sum": (p,), "cross": (p, p), "weighted": (p, groups), "norms": (groups, groups)}
    for name, array in (("sum", s), ("cross", c), ("weighted", r), ("norms", kl_diag)):
        if array.shape != expected[name]:
            raise ValueError(f"{name} must have shape {expected[name]}, got {array.shape}")
    s = s.reshape(groups, size)
    c = c.reshape(groups, size, groups, size)
    r = r.reshape(groups, size, groups)
    return debiased_cka_from_blocks(
        count=count,
        frob=np.einsum("hagb,hagb->hg", c, c),
        trace=np.einsum("haha->h", c),
        quad=np.einsum("ha,hagb,gb->hg", s, c, s),
        sum_sq=np.einsum("ha,ha->h", s, s),
        sum_weighted=np.einsum("ha,hag->hg", s, r),
        norms=kl_diag,
    )


def _symmetric(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return (a + a.T) / 2


def debiased_cka_from_blocks(
    count: int,
    frob: np.ndarray,
    trace: np.ndarray,
    quad: np.ndarray,
    sum_sq: np.ndarray,
    sum_weighted: np.ndarray,
    norms: np.ndarray,
) -> np.ndarray:
    """Debiased linear CKA from the per-group-pair reductions of the sums (what the
    capture keeps of a closed image group, ``hooks.ImageGroups``): ``frob`` ``‖C_hg‖²``,
    ``trace`` ``tr C_hh``, ``quad`` ``s_hᵀ C_hg s_g``, ``sum_sq`` ``‖s_h‖²``,
    ``sum_weighted`` ``s_hᵀ r_·g`` and ``norms``, with ``C = Σ x xᵀ``, ``s = Σ x``, ``r``
    the ``weighted`` sums. Same result and NaN rules as :func:`debiased_cka_from_sums`."""
    # ‖C_hg‖², s_hᵀ C_hg s_g and the norms are symmetric in (h, g); their reductions
    # round differently in either order, and the HSIC terms cancel down to a small
    # difference of them, so each is averaged with its transpose: the CKA matrix is
    # exactly symmetric.
    kl_diag = _symmetric(norms)
    n = int(count)
    tr_kl = _symmetric(frob) - kl_diag
    ones_k = np.asarray(sum_sq, dtype=np.float64) - np.asarray(trace, dtype=np.float64)
    s_r = np.asarray(sum_weighted, dtype=np.float64)
    ones_kl = _symmetric(quad) - s_r - s_r.T + kl_diag
    hsic, scale = _unbiased_hsic(n, tr_kl, ones_k[:, None], ones_k[None, :], ones_kl)
    diag = np.diag(hsic)
    diag = np.where(diag > _RESOLVABLE * np.diag(scale), diag, 0.0)
    return _cka_from_hsic(hsic, diag[:, None], diag[None, :])


def biased_cka_from_moments(comoment: np.ndarray, groups: int, size: int) -> np.ndarray:
    """Biased linear CKA between every pair of column groups, from a centred co-moment.

    Args:
        comoment: ``[p, p]`` centred co-moment ``Σ_i (x_i − x̄)(x_i − x̄)ᵀ`` (``Moments``),
            or any positive multiple such as the covariance: CKA ignores the scale.
        groups: Number of column groups.
        size: Columns per group.

    Returns:
        ``[groups, groups]`` CKA matrix; NaN for a constant group.
    """
    m = np.asarray(comoment, dtype=np.float64)
    if m.shape != (groups * size, groups * size):
        raise ValueError(f"comoment must be [{groups * size}, {groups * size}], got {m.shape}")
    blocks = m.reshape(groups, size, groups, size)
    squared = np.einsum("hagb,hagb->hg", blocks, blocks)
    self_norm = np.sqrt(np.diag(squared))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = squared / np.outer(self_norm, self_norm)
    return np.where(np.outer(self_norm, self_norm) > 0, out, np.nan)


def correlation_from_covariance(cov: np.ndarray) -> np.ndarray:
    """Pearson correlation matrix from a covariance (or co-moment) matrix.

    Args:
        cov: ``[channel, channel]`` symmetric covariance.

    Returns:
        Correlations clipped to ``[−1, 1]`` with an exact unit diagonal; a zero-variance
        (dead) channel has no correlation, so its row and column are NaN.
    """
    cov = np.asarray(cov, dtype=np.float64)
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1]:
        raise ValueError(f"a covariance matrix must be square, got {cov.shape}")
    std = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    alive = std > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.clip(cov / np.outer(std, std), -1.0, 1.0)
    np.fill_diagonal(corr, 1.0)
    corr[~alive, :] = np.nan
    corr[:, ~alive] = np.nan
    return corr


def participation_ratio(matrix_or_eigenvalues: np.ndarray) -> float:
    """Participation ratio ``(Σλ)² / Σλ²`` of a symmetric matrix's eigenvalues.

    For a symmetric matrix this equals ``tr(S)² / ‖S‖²_F``, computed without an
    eigendecomposition; slightly negative eigenvalues (debiased CKA noise) count as
    they are. It lies in ``[1, rank]`` for a PSD matrix.

    Args:
        matrix_or_eigenvalues: ``[unit, unit]`` symmetric matrix, or ``[unit]``
            eigenvalues.

    Returns:
        The participation ratio; NaN for an all-zero input.
    """
    a = np.asarray(matrix_or_eigenvalues, dtype=np.float64)
    if a.ndim == 1:
        total, squares = a.sum(), np.sum(a * a)
    elif a.ndim == 2 and a.shape[0] == a.shape[1]:
        # allclose(a, aᵀ) with one temporary (it matters at thousands of channels)
        asymmetry = np.abs(a - a.T)
        if np.nanmax(asymmetry, initial=0.0) > 1e-10 + 1e-8 * np.nanmax(np.abs(a), initial=0.0):
            raise ValueError("participation_ratio needs a symmetric matrix")
        total, squares = np.trace(a), np.sum(a * a)
    else:
        raise ValueError(f"expected eigenvalues or a square matrix, got shape {a.shape}")
    return float(total**2 / squares) if squares > 0 else float("nan")


@dataclass(frozen=True)
class RedundancySummary:
    """How redundant a layer's units are, from their similarity matrix.

    Attributes:
        units: Units summarised (NaN units excluded).
        excluded_units: Units with NaN similarity (e.g. dead channels) left out.
        mean_similarity: Mean off-diagonal similarity.
        mean_max_similarity: Mean over units of the largest similarity to another unit.
        effective_units: Participation ratio of the similarity matrix.
        effective_fraction: ``effective_units / units``.
        redundancy: ``1 − effective_fraction``.
        absolute: Whether similarities were taken in absolute value (correlations).
    """

    units: int
    excluded_units: int
    mean_similarity: float
    mean_max_similarity: float
    effective_units: float
    effective_fraction: float
    redundancy: float
    absolute: bool


def redundancy_summary(similarity: np.ndarray, *, absolute: bool = False) -> RedundancySummary:
    """Summaries comparable across heads (CKA) and channels (correlation).

    Args:
        similarity: ``[unit, unit]`` symmetric similarity with a unit diagonal. Units
            with a NaN diagonal (dead channels, constant heads) are excluded.
        absolute: Use ``|similarity|`` for the mean and maximum; pass ``True`` for
            correlations, where an anti-correlated channel is as redundant as a copy. The
            participation ratio always uses the signed matrix (PSD for correlations, and
            flipping a channel's sign leaves its eigenvalues unchanged).

    Returns:
        The summary; NaN statistics when fewer than two units remain.
    """
    s = np.asarray(similarity, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] != s.shape[1]:
        raise ValueError(f"a similarity matrix must be square, got {s.shape}")
    dead = np.isnan(np.diag(s))
    if dead.any():
        s = s[~dead][:, ~dead]
    units = s.shape[0]
    if np.isnan(s).any():
        raise ValueError("similarity has NaN entries between live units")
    nan = float("nan")
    if units < 2:
        effective = float(units) if units else nan
        return RedundancySummary(units, int(dead.sum()), nan, nan, effective, nan, nan, absolute)
    shown = np.abs(s) if absolute else s.copy()
    mean = (shown.sum() - np.trace(shown)) / (units * (units - 1))
    np.fill_diagonal(shown, -np.inf)  # the largest similarity to another unit
    effective = participation_ratio(s)
    fraction = effective / units
    return RedundancySummary(
        units=units,
        excluded_units=int(dead.sum()),
        mean_similarity=float(mean),
        mean_max_similarity=float(shown.max(1).mean()),
        effective_units=effective,
        effective_fraction=fraction,
        redundancy=1.0 - fraction,
        absolute=absolute,
    )


def corrected_participation_ratio(correlation: np.ndarray, rows: int) -> float:
    """Participation ratio of a correlation matrix estimated from ``rows`` rows, with the
    first-order small-sample correction of METRICS.md §4.

    ``E r̂² ≈ r² + (1 − r²)² / (n − 1)``, so ``Σλ² = ‖R‖²_F`` is biased upward by about
    ``p² / n`` at ``n ≈ p``; each squared off-diagonal correlation loses
    ``(1 − r̂²)² / (n − 1)`` before ``p² / ‖R‖²_F`` is taken (entries are not floored,
    which would bias the sum up again; the result is capped at ``p``).

    Args:
        correlation: ``[unit, unit]`` correlation matrix (unit diagonal, no NaN).
        rows: Rows ``n`` it was estimated from.

    Returns:
        The corrected participation ratio (NaN with fewer than 3 rows).
    """
    r = np.asarray(correlation, dtype=np.float64)
    if rows < 3:
        return float("nan")
    squares = r * r
    corrected = squares - (1.0 - squares) ** 2 / (rows - 1)
    np.fill_diagonal(corrected, np.diag(squares))
    total = np.trace(r)
    ssum = max(float(corrected.sum()), float(total**2) / r.shape[0])
    return float(total**2 / ssum) if ssum > 0 else float("nan")
