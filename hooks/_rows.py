"""Which rows of an activation the capture's statistics take: finite checks, real
tokens of padded windows, and positions sampled per image (METRICS.md §4)."""

from __future__ import annotations

import torch

from .geometry import TokenGeometry

__all__ = ["finite", "real_rows", "sample_rows", "stratified_positions"]


def finite(x: torch.Tensor) -> bool:
    """No NaN or inf in ``x``: one read-only reduction (``isfinite(x).all()`` allocates a
    mask as large as ``x`` and costs about ten times more); NaN propagates to the
    minimum and maximum, infinities are their own extremes."""
    if x.numel() == 0 or not x.is_floating_point():
        return True
    low, high = torch.aminmax(x)
    return bool(torch.isfinite(low) & torch.isfinite(high))


def real_rows(x: torch.Tensor, batch: int, geometry: TokenGeometry) -> torch.Tensor:
    """Per-head outputs ``[batch · window, token, features]`` of windows zero-padded at the
    border, as ``[batch, real tokens, features]``: padded slots are not tokens (METRICS.md
    §1). Anything else is returned as it is."""
    slots = geometry.real_slots() if geometry.padded else None
    if slots is None or x.dim() != 3:
        return x
    queries = torch.from_numpy(slots[0])
    windows, tokens = queries.shape[0], geometry.prefix + queries.shape[1]
    if x.shape[0] != batch * windows or x.shape[1] != tokens:
        return x
    prefix = torch.ones(windows, geometry.prefix, dtype=torch.bool)
    keep = torch.cat([prefix, queries], 1).reshape(-1).to(x.device)
    return x.reshape(batch, windows * tokens, x.shape[-1])[:, keep]


def stratified_positions(
    count: int, positions: int, images: int, generator: torch.Generator
) -> torch.Tensor:
    """``[images, positions]`` indices into ``range(count)``, stratified at random.

    The raster order is cut into ``positions`` equal strata and one index is drawn
    uniformly inside each (METRICS.md §4, sampling): every position of the grid has the
    same chance ``positions / count`` of being drawn, rows and columns alike, unlike a
    fixed lattice of evenly spaced raster indices. Draws come from ``generator``.
    """
    u = torch.rand(images, positions, generator=generator, dtype=torch.float64)
    edges = (torch.arange(positions, dtype=torch.float64) + u) * (count / positions)
    return edges.floor().long().clamp_(0, count - 1)


def sample_rows(
    x: torch.Tensor, batch: int, positions: int | None, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``[rows, features]`` from ``[batch, positions..., features]``: ``positions`` rows
    per image drawn by :func:`stratified_positions` (all rows when ``None``)."""
    features = x.shape[-1]
    generator = generator or torch.Generator().manual_seed(0)
    if x.dim() >= 3 and x.shape[0] == batch:
        per_image = x.reshape(batch, -1, features)
        count = per_image.shape[1]
        if positions is not None and count > positions:
            index = stratified_positions(count, positions, batch, generator).to(x.device)
            per_image = torch.gather(
                per_image, 1, index[:, :, None].expand(batch, positions, features)
            )
        return per_image.reshape(-1, features)
    flat = x.reshape(-1, features)
    if positions is not None and flat.shape[0] > positions * batch:
        index = stratified_positions(flat.shape[0], positions * batch, 1, generator)[0]
        flat = flat[index.to(x.device)]
    return flat
