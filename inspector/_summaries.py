"""Per-image, per-head attention summaries computed inside the capture hook (torch).

These are the streaming forms of METRICS.md §1-2; ``inspector.analyzers`` holds the
numpy definitions they are tested against. Nothing here keeps a map.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from hooks import Summary, TokenGeometry

__all__ = ["SUMMARY_NAMES", "attention_summaries", "plogp_sums"]

SUMMARY_NAMES = (
    "distance",
    "distance_raw",
    "prefix_mass",
    "entropy",
    "entropy_normalised",
    "distance_centre",
)


@lru_cache(maxsize=64)
def central_queries(geometry: TokenGeometry) -> torch.Tensor:
    """Indices of the spatial queries whose centre is nearest the centre of the query
    grid (for an even grid its 2×2 central tokens; METRICS.md §1, ``MAD_centre``)."""
    queries, _ = geometry.centres()
    queries = np.asarray(queries, dtype=np.float64)
    gap = np.hypot(*(queries - queries.mean(0)).T)
    return torch.from_numpy(np.flatnonzero(gap <= gap.min() + 1e-6))


@lru_cache(maxsize=64)
def _distances(geometry: TokenGeometry) -> torch.Tensor:
    queries, keys = geometry.centres()
    diff = queries[:, None, :] - keys[None, :, :]
    return torch.from_numpy(np.sqrt((diff**2).sum(-1))).float()


def _spatial(probs: torch.Tensor, geometry: TokenGeometry) -> torch.Tensor | None:
    """Probabilities of spatial queries over spatial keys, or None when the layout differs."""
    queries, keys = geometry.centres()
    p = geometry.prefix
    if probs.shape[-2] - p != len(queries) or probs.shape[-1] - p != len(keys):
        return None
    return probs[..., p:, p:]


@lru_cache(maxsize=64)
def _real_slots(geometry: TokenGeometry) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Real (not padding) query and key slots ``[sequence, Q]``, ``[sequence, K]`` of one
    image's windows, or ``None`` when nothing is padded."""
    slots = geometry.real_slots()
    if slots is None:
        return None
    return torch.from_numpy(slots[0]), torch.from_numpy(slots[1])


def _image_mean(values: torch.Tensor, valid: torch.Tensor, per_image: int) -> torch.Tensor:
    """``[sequence, head]`` contributions of ``values [sequence, head, query]`` whose mean
    over the ``per_image`` sequences of one image is the mean over that image's ``valid``
    queries (border windows hold fewer real queries than the others)."""
    sequences, heads = values.shape[:2]
    sums = torch.where(valid, values, 0.0).sum(-1).reshape(-1, per_image, heads)
    counts = valid.sum(-1).reshape(-1, per_image, heads).sum(1, keepdim=True)
    return (sums * per_image / counts).reshape(sequences, heads)


def _tiled(mask: torch.Tensor, sequences: int, device: torch.device) -> torch.Tensor:
    """A per-image ``[window, slot]`` mask repeated for every image of the batch."""
    if sequences % mask.shape[0]:
        raise ValueError(f"{sequences} sequences is not a multiple of {mask.shape[0]} windows")
    return mask.to(device).repeat(sequences // mask.shape[0], 1)


def _padded(
    probs: torch.Tensor, geometry: TokenGeometry, slots: tuple[torch.Tensor, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Every summary of windows zero-padded at the border (METRICS.md §1): padded queries
    dropped, each row restricted to the real keys (prefix included) and renormalised."""
    p, device = geometry.prefix, probs.device
    sequences, per_image = probs.shape[0], slots[0].shape[0]
    queries = _tiled(slots[0], sequences, device)[:, None, :]  # [S, 1, Q]
    keys = _tiled(slots[1], sequences, device)  # [S, K]
    rows = (
        probs[..., p:, :].float()
        * torch.cat([torch.ones(sequences, p, dtype=torch.bool, device=device), keys], -1)[
            :, None, None, :
        ]
    )
    spatial = rows[..., p:]
    weighted = (spatial * _distances(geometry).to(device)).sum(-1)  # [S, H, Q]
    mass = spatial.sum(-1)
    total = rows.sum(-1)
    per_query = weighted / mass
    valid = queries & torch.isfinite(per_query)
    centre = torch.zeros(queries.shape[-1], dtype=torch.bool, device=device)
    centre[central_queries(geometry).to(device)] = True
    normed = rows / total[..., None]
    entropy = -torch.special.xlogy(normed, normed).sum(-1)
    counted = (p + keys.sum(-1)).float()[:, None, None]  # real keys per sequence
    normalised = entropy / torch.where(counted > 1, counted.log(), math.nan)
    real = queries.expand_as(weighted)
    kept = real & (total > 0)
    return {
        "distance": _image_mean(per_query, valid, per_image),
        "distance_raw": _image_mean(weighted, real, per_image),
        "prefix_mass": _image_mean((total - mass) / total, kept, per_image),
        "entropy": _image_mean(entropy, kept, per_image),
        "entropy_normalised": _image_mean(normalised, kept, per_image),
        "distance_centre": _image_mean(per_query, valid & centre, per_image),
    }


def _distance(probs: torch.Tensor, geometry: TokenGeometry) -> tuple[torch.Tensor, ...]:
    nan = torch.full(probs.shape[:2], math.nan)
    if not geometry.known:
        return nan, nan, nan, nan
    spatial = _spatial(probs, geometry)
    if spatial is None:
        return nan, nan, nan, nan
    spatial = spatial.float()
    weighted = (spatial * _distances(geometry).to(spatial.device)).sum(-1)
    mass = spatial.sum(-1)
    # A query whose whole mass sits on prefix tokens has no spatial distribution to renormalise.
    per_query = weighted / mass
    renormalised = per_query.nanmean(-1)
    centre = per_query[..., central_queries(geometry).to(per_query.device)].nanmean(-1)
    prefix = geometry.prefix
    prefix_mass = probs[..., prefix:, :prefix].float().sum(-1).mean(-1)
    return renormalised, weighted.mean(-1), prefix_mass, centre


_PLOGP: dict[str, object] = {}


def plogp_sums(probs: torch.Tensor, prefix: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``Σ_k p log p`` of every spatial query's row ``[sequence, head, query]``, over all
    keys and over the prefix keys only (their difference is the spatial keys' part).

    The capture's entropy summaries and the input-dependence sums both read it, so the
    one elementwise logarithm of a batch's maps is shared through a one-entry cache
    keyed on the probabilities tensor. ``log`` and an in-place product are about 2.5×
    faster than ``xlogy``, which handles ``0 log 0 = 0`` per element; here a zero
    probability gives ``0 · (-inf) = NaN``, so the rows that come out non-finite (zeros,
    or NaN/inf in the input) are redone with ``xlogy``.
    """
    if _PLOGP.get("key") is probs and _PLOGP.get("prefix") == prefix:
        return _PLOGP["value"]  # type: ignore[return-value]
    rows = probs[..., prefix:, :].float()  # spatial queries, every key (prefix included)
    terms = rows.log().mul_(rows)
    total, front = terms.sum(-1), terms[..., :prefix].sum(-1)
    del terms
    bad = ~torch.isfinite(total)
    if bool(bad.any()):
        index = bad.nonzero(as_tuple=True)
        redone = torch.special.xlogy(rows[index], rows[index])
        total = total.index_put(index, redone.sum(-1))
        front = front.index_put(index, redone[..., :prefix].sum(-1))
    _PLOGP.update(key=probs, prefix=prefix, value=(total, front))
    return total, front


def _entropy(probs: torch.Tensor, prefix: int) -> tuple[torch.Tensor, torch.Tensor]:
    entropy = -plogp_sums(probs, prefix)[0].mean(-1)
    keys = probs.shape[-1]
    return entropy, entropy / math.log(keys) if keys > 1 else torch.zeros_like(entropy)


def attention_summaries() -> dict[str, Summary]:
    """Summaries for :class:`hooks.CaptureOptions`: renormalised and raw mean attention
    distance (px), the renormalised distance of the central queries (``MAD_centre``),
    prefix mass, entropy over all keys (nats) and its normalised form,
    each a mean over spatial queries.

    Windows zero-padded at the border (:attr:`TokenGeometry.padded`) count real tokens
    only (METRICS.md §1): padded queries are dropped and every row is renormalised over
    the real keys, for the entropy too (normalised by the log of the real keys). As border
    windows hold fewer real queries, their per-sequence values are weighted so that the
    mean over an image's sequences (what the capture stores) is the mean over its real
    queries.

    One call per batch computes all six; results are shared through a one-entry cache
    keyed on the probabilities tensor.
    """
    cache: dict[str, object] = {}

    def compute(probs: torch.Tensor, geometry: TokenGeometry) -> dict[str, torch.Tensor]:
        if cache.get("key") is not probs and geometry.padded:
            slots = _real_slots(geometry) if _spatial(probs, geometry) is not None else None
            if slots is not None:
                cache["key"] = probs
                cache["value"] = _padded(probs, geometry, slots)
        if cache.get("key") is not probs:
            distance, raw, prefix_mass, centre = _distance(probs, geometry)
            entropy, normalised = _entropy(probs, geometry.prefix)
            cache["key"] = probs
            cache["value"] = {
                "distance": distance,
                "distance_raw": raw,
                "prefix_mass": prefix_mass,
                "entropy": entropy,
                "entropy_normalised": normalised,
                "distance_centre": centre,
            }
        return cache["value"]  # type: ignore[return-value]

    def one(name: str) -> Summary:
        return lambda probs, geometry: compute(probs, geometry)[name]

    return {name: one(name) for name in SUMMARY_NAMES}
