"""Streaming sums for input dependence (METRICS.md §8): per attention layer, the sum of
the images' spatial attention maps (renormalised over spatial keys) and of their
entropies, in ``G`` contiguous image groups so that the interval is a delete-a-group
jackknife over groups (METRICS.md §7). Nothing grows with the images.

The groups are the capture's (``hooks.ImageGroups``): with the image set's size ``N``
known (``CaptureOptions.images``), image ``i`` (its index in the whole image set, so a
resumed run or a shard fills the same groups) goes to group ``i * G // N``,
``G = min(CaptureOptions.image_groups, N)``; without it, to group ``i mod G``.

Fed by ``hooks.CaptureOptions.on_attention`` during the capture pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from inspector._summaries import plogp_sums

if TYPE_CHECKING:
    import hooks

__all__ = ["GROUPS", "MeanMapSums", "MeanMaps"]

GROUPS = 20
"""Image groups of the streamed sums (METRICS.md §7: G ≥ 20)."""

BUDGET = 1 << 26
"""Most float64 elements of one layer's group sums (512 MiB); wider layers use fewer
groups, and a layer whose single map sum exceeds it is left out with a note."""


@dataclass
class MeanMapSums:
    """One layer's streamed sums.

    Attributes:
        maps: ``[group, window, head, query, key]`` sum of the images' renormalised
            spatial maps.
        entropy: ``[group, head]`` sum over images of ``mean_q H(Ā_x(q, ·))``.
        counts: ``[group]`` images per group.
        keys: Spatial keys of a map.
        problem: Why the layer has no sums, if it has none.
    """

    maps: torch.Tensor | None = None
    entropy: torch.Tensor | None = None
    counts: torch.Tensor | None = None
    keys: int = 0
    images: int = 0
    problem: str = ""


@dataclass
class MeanMaps:
    """The ``on_attention`` callback of the capture pass; :meth:`bind` it to the capture
    (the layers' token geometry says which tokens are spatial)."""

    groups: int = GROUPS
    layers: dict[str, MeanMapSums] = field(default_factory=dict)
    _capture: hooks.Capture | None = field(default=None, repr=False)

    def bind(self, capture: hooks.Capture) -> None:
        self._capture = capture
        self.layers.clear()

    def __call__(self, name: str, probs: torch.Tensor) -> None:
        if self._capture is None:
            return
        try:
            self._add(name, probs)
        except Exception as exc:  # a failed analysis is a note, not a failed capture
            sums = self.layers.setdefault(name, MeanMapSums())
            sums.problem = f"{type(exc).__name__}: {exc}".splitlines()[0]
            sums.maps = sums.entropy = sums.counts = None

    def _count(self) -> int:
        """G: the capture's image groups (``self.groups`` when it keeps none)."""
        assert self._capture is not None
        opts = self._capture.options
        if opts.image_groups is None or opts.images is None:
            return self.groups
        return min(opts.image_groups, opts.images)

    def _group_index(self, first: int, batch: int, groups: int) -> torch.Tensor:
        """The image groups of images ``first .. first + batch - 1``."""
        assert self._capture is not None
        index = torch.arange(batch) + first
        total = self._capture.options.images
        if self._capture.options.image_groups is None or total is None:
            return index % groups
        return (index * groups // total).clamp(max=groups - 1)

    def _add(self, name: str, probs: torch.Tensor) -> None:
        assert self._capture is not None
        record = self._capture.attention[name]
        sums = self.layers.setdefault(name, MeanMapSums())
        if sums.problem:
            return
        geometry = record.geometry
        if not geometry.known:
            sums.problem = f"geometry {geometry.kind}: {geometry.reason}"
            return
        batch = self._capture.batch
        p = geometry.prefix
        spatial = probs[..., p:, p:].float()
        if spatial.shape[-1] < 1 or spatial.shape[-2] < 1:
            sums.problem = "no spatial tokens"
            return
        per_image = spatial.shape[0] // batch
        slots = geometry.real_slots() if geometry.padded else None
        if slots is not None:  # padded window slots are not tokens (CONTRIBUTING.md 33)
            queries, keys = (torch.from_numpy(s).to(spatial.device) for s in slots)
            if queries.shape[0] != per_image:
                sums.problem = f"{per_image} windows per image, its geometry {queries.shape[0]}"
                return
            real = queries.repeat(batch, 1)[:, None, :, None] & keys.repeat(batch, 1)[:, None, None]
            spatial = torch.where(real, spatial, 0.0)  # padded queries: rows without mass
            slogs = torch.special.xlogy(spatial, spatial).sum(-1)
        else:  # Σ s log s over the spatial keys, from the log the entropy summary takes too
            total, front = plogp_sums(probs, p)
            slogs = total - front
        mass = spatial.sum(-1)  # [seq, head, q]
        # The renormalised row s / m has entropy log m - Σ s log s / m. Queries without
        # spatial mass (padded ones included) carry no distribution: left out of the
        # entropy, the mean over the image's other queries; their maps add nothing.
        alive = mass > 0
        inverse = torch.where(alive, 1.0 / mass.clamp_min(1e-30), 0.0)
        per_query = torch.where(alive, mass.clamp_min(1e-30).log() - slogs * inverse, 0.0)
        heads = spatial.shape[1]
        entropy = per_query.double().sum(-1).reshape(batch, per_image, heads).sum(1)
        entropy = entropy / alive.sum(-1).reshape(batch, per_image, heads).sum(1).clamp_min(1)
        if sums.maps is None:
            one = spatial[:per_image].numel()
            groups = max(1, min(self._count(), BUDGET // max(one, 1)))
            if one > BUDGET:
                sums.problem = f"its maps ({one} values) exceed the streaming budget"
                return
            shape = (groups, per_image, *spatial.shape[1:])
            sums.maps = torch.zeros(shape, dtype=torch.float64)
            sums.entropy = torch.zeros((groups, heads), dtype=torch.float64)
            sums.counts = torch.zeros(groups, dtype=torch.float64)
            sums.keys = int(spatial.shape[-1])
        assert sums.entropy is not None and sums.counts is not None
        index = self._group_index(self._capture.images, batch, sums.maps.shape[0])
        # The renormalised maps summed per image group in the maps' precision (a batch
        # touches one or two groups), then added to the float64 sums: no float64 copy of
        # the batch's maps.
        rows = spatial.reshape(batch, per_image, *spatial.shape[1:])
        weights = inverse.reshape(batch, per_image, heads, -1, 1)
        for group in index.unique().tolist():
            members = (index == group).nonzero()[:, 0]
            start, stop = int(members[0]), int(members[-1]) + 1
            if stop - start != len(members):  # not contiguous (no image set size): one by one
                for i in members.tolist():
                    sums.maps[group].add_((rows[i] * weights[i]).cpu())
                continue
            part = torch.mul(rows[start:stop], weights[start:stop]).sum(0)
            sums.maps[group].add_(part.cpu())
        sums.entropy.index_add_(0, index, entropy.cpu())
        sums.counts.index_add_(0, index, torch.ones(batch, dtype=torch.float64))
        sums.images += batch

    def arrays(self) -> dict[str, dict[str, np.ndarray | int | str]]:
        """Per layer: ``maps``, ``entropy``, ``counts`` as numpy arrays, or ``problem``."""
        out: dict[str, dict[str, np.ndarray | int | str]] = {}
        for name, sums in self.layers.items():
            if sums.problem or sums.maps is None:
                out[name] = {"problem": sums.problem or "no attention seen"}
                continue
            assert sums.entropy is not None and sums.counts is not None
            out[name] = {
                "maps": sums.maps.numpy(),
                "entropy": sums.entropy.numpy(),
                "counts": sums.counts.numpy(),
            }
        return out
