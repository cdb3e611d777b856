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
    probs: np.ndarray,
    distances: np.ndarray,
    prefix: int,
    key_prefix: int | None = None,
    real_queries: np.ndarray | None = None,
    real_keys: np.ndarray | None = None,
) -> DistanceStats:
    """Mean attention distance (MAD) of attention maps, in the units of ``distances``.

    Args:
        probs: ``[..., query, key]`` attention probabilities over all tokens, prefix first.
        distances: ``[spatial query, spatial key]`` distances between token centres, self
            pairs included (see :func:`distance_matrix`).
        prefix: Prefix tokens leading the query axis.
        key_prefix: Prefix tokens leading the key axis; defaults to ``prefix``.
        real_queries: Booleans over the spatial queries (broadcast against
            ``probs[..., spatial query]``), False for the padding slots of a window
            zero-padded at the border (``TokenGeometry.real_slots``): those queries are
            left out (METRICS.md §1: padded slots are not tokens).
        real_keys: Booleans over the spatial keys, likewise: each row is restricted to
            the real keys (prefix keys included) and renormalised.

    Returns:
        Per leading index: renormalised and raw MAD, prefix mass and rows left out
        (padded queries are not counted as rows left out).

    Raises:
        ValueError: If the spatial part of ``probs`` does not match ``distances``.
    """
    rows, spatial, prefix_keys = _split(probs, prefix, key_prefix)
    distances = np.asarray(distances, dtype=np.float64)
    if distances.shape != spatial.shape[-2:]:
        raise ValueError(
            f"distances {distances.shape} do not match the spatial attention block "
            f"{spatial.shape[-2:]} of attention {np.shape(probs)}"
        )
    queries = np.ones(spatial.shape[-2], dtype=bool)
    if real_keys is not None or real_queries is not None:
        kp = prefix_keys.shape[-1]
        # Raw MAD stays unnormalised over the real keys, as the streamed summary.
        rows, queries = _real_rows(rows, kp, real_queries, real_keys, renormalise=False)
        total = rows.sum(-1, keepdims=True)
        spatial = rows[..., kp:]
        prefix_keys = np.divide(
            rows[..., :kp], total, out=np.zeros_like(rows[..., :kp]), where=total > 0
        )
    weighted = np.einsum("...qk,qk->...q", spatial, distances)
    mass = spatial.sum(-1)
    # A row with all its mass on prefix tokens has no spatial distribution to measure.
    has_mass = (mass > 0) & queries
    per_query = np.divide(weighted, mass, out=np.zeros_like(weighted), where=has_mass)
    kept = has_mass.sum(-1)
    counted = np.broadcast_to(queries, has_mass.shape).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        renormalised = per_query.sum(-1) / kept
        raw = np.where(queries, weighted, 0.0).sum(-1) / counted
        prefix_mass = np.where(queries, prefix_keys.sum(-1), 0.0).sum(-1) / counted
    return DistanceStats(
        renormalised=renormalised,
        raw=raw,
        prefix_mass=prefix_mass,
        empty_rows=counted - kept,
    )


def _real_rows(
    rows: np.ndarray,
    key_prefix: int,
    real_queries: np.ndarray | None,
    real_keys: np.ndarray | None,
    renormalise: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Rows restricted to the real keys (prefix keys kept), renormalised unless told, and
    the real-query mask (METRICS.md §1, padded windows)."""
    spatial_queries, spatial_keys = rows.shape[-2], rows.shape[-1] - key_prefix
    queries = np.ones(spatial_queries, dtype=bool)
    if real_queries is not None:
        real_queries = np.asarray(real_queries, dtype=bool)
        if real_queries.shape[-1:] != (spatial_queries,):
            raise ValueError(
                f"real_queries {real_queries.shape} must end in the {spatial_queries} "
                f"spatial queries of attention {rows.shape}"
            )
        queries = real_queries
    if real_keys is not None:
        real_keys = np.asarray(real_keys, dtype=bool)
        if real_keys.shape[-1:] != (spatial_keys,):
            raise ValueError(
                f"real_keys {real_keys.shape} must end in the {spatial_keys} spatial keys "
                f"of attention {rows.shape}"
            )
        prefix = np.ones((*real_keys.shape[:-1], key_prefix), dtype=bool)
        keep = np.concatenate([prefix, real_keys], -1)[..., None, :]
        rows = np.where(keep, rows, 0.0)
        if renormalise:
            total = rows.sum(-1, keepdims=True)
            rows = np.divide(rows, total, out=np.zeros_like(rows), where=total > 0)
    return rows, queries


def _entropy(rows: np.ndarray) -> np.ndarray:
    """``-Σ p ln p`` over the last axis with ``0 ln 0 = 0``."""
    logs = np.log(rows, out=np.zeros_like(rows), where=rows > 0)
    return -(rows * logs).sum(-1)


def attention_entropy(
    probs: np.ndarray,
    prefix: int,
    include_prefix_keys: bool = True,
    key_prefix: int | None = None,
    real_queries: np.ndarray | None = None,
    real_keys: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Entropy of attention rows (natural log), mean over spatial queries.

    Args:
        probs: ``[..., query, key]`` attention probabilities over all tokens, prefix first.
        prefix: Prefix tokens leading the query axis.
        include_prefix_keys: Count prefix tokens as keys. Otherwise rows are restricted to
            spatial keys and renormalised; rows with no spatial mass are left out (NaN
            where none is left).
        key_prefix: Prefix tokens leading the key axis; defaults to ``prefix``.
        real_queries: Booleans over the spatial queries, False for padding slots (see
            :func:`mean_attention_distance`): those queries are left out.
        real_keys: Booleans over the spatial keys: rows are restricted to the real keys
            and renormalised, and ``keys`` below counts real keys only.

    Returns:
        ``(entropy, normalised)`` per leading index; ``normalised = entropy / ln(keys)``
        with ``keys`` the number of keys counted (NaN for a single key).
    """
    rows, spatial, _ = _split(probs, prefix, key_prefix)
    kp = rows.shape[-1] - spatial.shape[-1]
    queries: np.ndarray = np.ones(spatial.shape[-2], dtype=bool)
    keys: np.ndarray | int = rows.shape[-1] if include_prefix_keys else spatial.shape[-1]
    if real_keys is not None or real_queries is not None:
        rows, queries = _real_rows(rows, kp, real_queries, real_keys)
        spatial = rows[..., kp:]
        if real_keys is not None:
            real = np.asarray(real_keys, dtype=bool).sum(-1)
            keys = real + kp if include_prefix_keys else real
    if include_prefix_keys:
        has_row = np.broadcast_to(queries, rows.shape[:-1])
        per_query = _entropy(rows)
    else:
        mass = spatial.sum(-1, keepdims=True)
        has_row = (mass[..., 0] > 0) & queries
        per_query = _entropy(np.divide(spatial, mass, out=np.zeros_like(spatial), where=mass > 0))
    with np.errstate(invalid="ignore", divide="ignore"):
        entropy = np.where(has_row, per_query, 0.0).sum(-1) / has_row.sum(-1)
        logs = np.log(np.asarray(keys, dtype=np.float64))
        normalised = np.where(logs > 0, entropy / np.where(logs > 0, logs, 1.0), np.nan)
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
