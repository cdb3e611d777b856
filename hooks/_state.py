"""The capture state as plain arrays: one type for checkpoints, resume, ranks and analyses.

A :class:`~hooks.Capture` accumulates in torch; :class:`CaptureState` is the same content
as numpy arrays per layer (``Capture.state()``), in the run file's layout (``to_tree``),
mergeable exactly (Chan's update for moments, re-expression about one shift for CKA
sums); ``Capture.restore(state)`` seeds a new capture so that it continues the state.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

import numpy as np

from ._accumulate import GroupSums, Moments
from ._image_groups import ImageGroups
from .geometry import TokenGeometry

__all__ = ["CaptureState", "LayerState"]


class _LayerLike(Protocol):
    name: str
    kind: str
    attrs: Mapping[str, Any]
    summaries: Mapping[str, np.ndarray]
    maps: np.ndarray | None
    moments: Mapping[str, np.ndarray] | None
    groups: Mapping[str, np.ndarray] | None
    image_groups: Mapping[str, np.ndarray] | None


@dataclass(frozen=True)
class LayerState:
    """What a capture gathered for one layer, as plain arrays.

    Attributes:
        name: Module path.
        kind: ``attention`` or ``channel``.
        attrs: ``images`` and ``nonfinite_batches``; attention layers ``heads`` and
            ``geometry`` (:meth:`TokenGeometry.to_dict`); channel layers ``channels``
            and ``site`` (``kind``, ``point``, ``channel_axis``).
        summaries: Per-image summaries ``[sample, head]`` by name (attention layers).
        maps: First-K attention maps (float16) ``[sample, head, query, key]``, or None.
        moments: :meth:`Moments.state`, or None.
        groups: :meth:`GroupSums.state`, or None.
        image_groups: :meth:`ImageGroups.state` (CKA pieces per image group, for
            intervals), or None.
    """

    name: str
    kind: Literal["attention", "channel"]
    attrs: Mapping[str, Any]
    summaries: Mapping[str, np.ndarray] = field(default_factory=dict)
    maps: np.ndarray | None = None
    moments: Mapping[str, np.ndarray] | None = None
    groups: Mapping[str, np.ndarray] | None = None
    image_groups: Mapping[str, np.ndarray] | None = None

    @property
    def geometry(self) -> TokenGeometry | None:
        """The attention layer's token geometry (None for channel layers)."""
        found = self.attrs.get("geometry")
        return TokenGeometry.from_dict(found) if found else None

    def to_tree(self) -> dict[str, Any]:
        """The run file's per-layer form (``attrs`` with ``kind``, then the arrays)."""
        tree: dict[str, Any] = {"attrs": {"kind": self.kind, **self.attrs}}
        if self.kind == "attention":
            tree["summaries"] = dict(self.summaries)
            tree["maps"] = self.maps
        tree["moments"] = dict(self.moments) if self.moments is not None else None
        tree["groups"] = dict(self.groups) if self.groups is not None else None
        tree["image_groups"] = dict(self.image_groups) if self.image_groups is not None else None
        return tree

    def merge(self, other: LayerState, *, keep_maps: int) -> LayerState:
        """This layer's state followed by ``other``'s (same layer, later images).

        Summaries are concatenated, maps kept for the first ``keep_maps`` images, counts
        added, accumulators merged exactly; a geometry found unknown in either part is
        unknown in the merge.
        """
        if (other.name, other.kind) != (self.name, self.kind):
            raise ValueError(f"cannot merge {other.kind} {other.name} into {self.kind} {self.name}")
        attrs = dict(self.attrs)
        attrs["images"] = int(self.attrs.get("images", 0)) + int(other.attrs.get("images", 0))
        attrs["nonfinite_batches"] = int(self.attrs.get("nonfinite_batches", 0)) + int(
            other.attrs.get("nonfinite_batches", 0)
        )
        if self.kind == "channel":
            attrs["channels"] = self.attrs.get("channels") or other.attrs.get("channels")
        mine, theirs = self.geometry, other.geometry
        if mine is not None and theirs is not None and mine.known and not theirs.known:
            attrs["geometry"] = theirs.to_dict()
        summaries = {
            key: np.concatenate([self.summaries[key], other.summaries[key]])
            if key in self.summaries and key in other.summaries
            else self.summaries.get(key, other.summaries.get(key))
            for key in [*self.summaries, *(k for k in other.summaries if k not in self.summaries)]
        }
        return replace(
            self,
            attrs=attrs,
            summaries=summaries,
            maps=_merge_maps(self.maps, other.maps, keep_maps),
            moments=_merge_state(self.moments, other.moments, Moments),
            groups=_merge_state(self.groups, other.groups, GroupSums),
            image_groups=_merge_state(self.image_groups, other.image_groups, ImageGroups),
        )


def _merge_maps(a: np.ndarray | None, b: np.ndarray | None, keep: int) -> np.ndarray | None:
    if b is None or not len(b):
        return a
    if a is None or not len(a):
        return b[:keep]
    room = keep - len(a)
    return np.concatenate([a, b[:room]]) if room > 0 else a


def _merge_state(
    a: Mapping[str, np.ndarray] | None, b: Mapping[str, np.ndarray] | None, kind: Any
) -> dict[str, np.ndarray] | None:
    if b is None:
        return None if a is None else dict(a)
    if a is None:
        return dict(b)
    return kind.from_state(a).merge(kind.from_state(b)).state()


@dataclass(frozen=True)
class CaptureState:
    """Every layer's :class:`LayerState`, in model order."""

    layers: Mapping[str, LayerState]

    @classmethod
    def from_layers(cls, layers: Iterable[_LayerLike]) -> CaptureState:
        """From objects with the same attributes (e.g. the layers of a run file)."""
        return cls(
            {
                layer.name: LayerState(
                    layer.name,
                    "attention" if layer.kind == "attention" else "channel",
                    dict(layer.attrs),
                    dict(layer.summaries or {}),
                    layer.maps,
                    layer.moments,
                    layer.groups,
                    layer.image_groups,
                )
                for layer in layers
            }
        )

    def to_tree(self) -> dict[str, dict[str, Any]]:
        """Per-layer trees in the run file's layout."""
        return {name: layer.to_tree() for name, layer in self.layers.items()}

    def images(self) -> int:
        """The most images any layer saw."""
        return max((int(s.attrs.get("images", 0)) for s in self.layers.values()), default=0)

    def merge(self, other: CaptureState, *, keep_maps: int) -> CaptureState:
        """This state followed by ``other``'s (later images, e.g. the next rank's shard)."""
        merged = dict(self.layers)
        for name, layer in other.layers.items():
            merged[name] = (
                merged[name].merge(layer, keep_maps=keep_maps) if name in merged else layer
            )
        return CaptureState(merged)
