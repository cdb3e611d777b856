"""Attention distance, entropy and head-to-head divergence (METRICS.md §1, §2, §4).

Axis names: ``query`` and ``key`` index all tokens of an attention map, prefix tokens
(class, distillation, register) first; any leading axes (``sample``, ``head``) are kept.
Only *spatial* queries are averaged: a prefix token's query has no position.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "DistanceStats",
    "attention_entropy",
    "js_divergence",
    "mean_attention_distance",
    "pairwise_js_divergence",
]


@dataclass(frozen=True)
class DistanceStats:
    """Mean attention distance of every leading index, reduced over spatial queries.

    Attributes:
        renormalised: MAD with each row renormalised over spatial keys (METRICS.md §1,
            the default shown). Rows with no spatial mass are left out of the mean; NaN
            where every row of a map has none.
        raw: MAD without renormalisation (``Σ_k∈patches A_qk d_qk``, mean over queries).
        prefix_mass: Attention sent to prefix keys, mean over spatial queries.
        empty_rows: Number of spatial queries left out of ``renormalised``.
    """

    renormalised: np.ndarray
    raw: np.ndarray
    prefix_mass: np.ndarray
    empty_rows: np.ndarray


def _split(
    probs: np.ndarray, prefix: int, key_prefix: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns float64 ``(spatial-query rows, their spatial keys, their prefix keys)``."""
    probs = np.asarray(probs)
    if probs.ndim < 2:
        raise ValueError(f"attention must be [..., query, key], got shape {probs.shape}")
    key_prefix = prefix if key_prefix is None else key_prefix
    if prefix < 0 or key_prefix < 0:
        raise ValueError(f"prefix counts must be >= 0, got {prefix}, {key_prefix}")
    if prefix >= probs.shape[-2] or key_prefix >= probs.shape[-1]:
        raise ValueError(
            f"attention {probs.shape} has no spatial tokens after {prefix} query and "
            f"{key_prefix} key prefix tokens"
        )
    rows = probs[..., prefix:, :].astype(np.float64, copy=False)
    return rows, rows[..., key_prefix:], rows[..., :key_prefix]


def mean_attention_distance(
    probs: np.ndarray, distances: np.ndarray, prefix: int, key_prefix: int | None = None
) -> DistanceStats:
    """Mean attention distance (MAD) of attention maps, in the units of ``distances``.

    Args:
        probs: ``[..., query, key]`` attention probabilities over all tokens, prefix first.
        distances: ``[spatial query, spatial key]`` distances between token centres, self
            pairs included (see :func:`distance_matrix`).
        prefix: Prefix tokens leading the query axis.
        key_prefix: Prefix tokens leading the key axis; defaults to ``prefix``.

    Returns:
        Per leading index: renormalised and raw MAD, prefix mass and rows left out.

    Raises:
        ValueError: If the spatial part of ``probs`` does not match ``distances``.
    """
    _, spatial, prefix_keys = _split(probs, prefix, key_prefix)
    distances = np.asarray(distances, dtype=np.float64)
    if distances.shape != spatial.shape[-2:]:
        raise ValueError(
            f"distances {distances.shape} do not match the spatial attention block "
            f"{spatial.shape[-2:]} of attention {np.shape(probs)}"
        )
    weighted = np.einsum("...qk,qk->...q", spatial, distances)
    mass = spatial.sum(-1)
    # A row with all its mass on prefix tokens has no spatial distribution to measure.
    has_mass = mass > 0
    per_query = np.divide(weighted, mass, out=np.zeros_like(weighted), where=has_mass)
    kept = has_mass.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        renormalised = per_query.sum(-1) / kept
    return DistanceStats(
        renormalised=renormalised,
        raw=weighted.mean(-1),
        prefix_mass=prefix_keys.sum(-1).mean(-1),
        empty_rows=has_mass.shape[-1] - kept,
    )


def _entropy(rows: np.ndarray) -> np.ndarray:
    """``-Σ p ln p`` over the last axis with ``0 ln 0 = 0``."""
    logs = np.log(rows, out=np.zeros_like(rows), where=rows > 0)
    return -(rows * logs).sum(-1)


def attention_entropy(
    probs: np.ndarray,
    prefix: int,
    include_prefix_keys: bool = True,
    key_prefix: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Entropy of attention rows (natural log), mean over spatial queries.

    Args:
        probs: ``[..., query, key]`` attention probabilities over all tokens, prefix first.
        prefix: Prefix tokens leading the query axis.
        include_prefix_keys: Count prefix tokens as keys. Otherwise rows are restricted to
            spatial keys and renormalised; rows with no spatial mass are left out (NaN
            where none is left).
        key_prefix: Prefix tokens leading the key axis; defaults to ``prefix``.

    Returns:
        ``(entropy, normalised)`` per leading index; ``normalised = entropy / ln(keys)``
        with ``keys`` the number of keys counted (NaN for a single key).
    """
    rows, spatial, _ = _split(probs, prefix, key_prefix)
    if include_prefix_keys:
        entropy = _entropy(rows).mean(-1)
        keys = rows.shape[-1]
    else:
        mass = spatial.sum(-1, keepdims=True)
        has_mass = mass[..., 0] > 0
        normed = np.divide(spatial, mass, out=np.zeros_like(spatial), where=mass > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            entropy = _entropy(normed).sum(-1) / has_mass.sum(-1)
        keys = spatial.shape[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        normalised = entropy / np.log(keys) if keys > 1 else np.full_like(entropy, np.nan)
    return entropy, normalised


def js_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen–Shannon divergence between attention rows (natural log), mean over queries.

    Args:
        p: ``[..., query, key]`` attention rows of one head (each row sums to 1).
        q: Rows of another head, same shape.

    Returns:
        ``[...]`` mean over queries of ``½ KL(p ‖ m) + ½ KL(q ‖ m)``, ``m = (p + q) / 2``;
        between 0 and ln 2.
    """
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if p.shape != q.shape or p.ndim < 2:
        raise ValueError(
            f"js_divergence needs equal [..., query, key] shapes, got {p.shape}, {q.shape}"
        )
    m = 0.5 * (p + q)
    # JS = H(m) - (H(p) + H(q)) / 2: no division, and 0 ln 0 = 0 handles disjoint supports.
    js = _entropy(m) - 0.5 * (_entropy(p) + _entropy(q))
    return np.maximum(js, 0.0).mean(-1)


def pairwise_js_divergence(maps: np.ndarray) -> np.ndarray:
    """Head-by-head matrix of mean Jensen–Shannon divergence.

    Args:
        maps: ``[sample, head, query, key]`` attention maps (select the queries and keys
            to compare before calling).

    Returns:
        ``[head, head]`` symmetric matrix of JS divergence, mean over queries and samples;
        zero diagonal.
    """
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 4:
        raise ValueError(f"maps must be [sample, head, query, key], got {maps.shape}")
    heads = maps.shape[1]
    out = np.zeros((heads, heads))
    entropies = _entropy(maps)  # [sample, head, query], reused by every pair
    for h in range(heads):
        for g in range(h + 1, heads):
            mixed = _entropy(0.5 * (maps[:, h] + maps[:, g]))
            js = mixed - 0.5 * (entropies[:, h] + entropies[:, g])
            out[h, g] = out[g, h] = np.maximum(js, 0.0).mean()
    return out
