"""The result type every analyzer returns: per-layer arrays plus the analyzer's parameters."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ._registry import LayerInput

__all__ = ["LayerResults", "nan_stats", "nonfinite_note"]


@dataclass(frozen=True)
class LayerResults:
    """One analyzer's result.

    Attributes:
        analyzer: Registered name.
        version: Analyzer version (stored with the result).
        params: The analyzer's parameters.
        layers: Per layer path: named arrays or numbers (``mean``, ``std``, ...).
        summary: Model-level numbers (e.g. the largest prunable fraction).
        notes: Per layer path, why a number is missing (unknown geometry, ...).
    """

    analyzer: str
    version: str
    params: Mapping[str, Any]
    layers: Mapping[str, Mapping[str, Any]]
    summary: Mapping[str, Any] = field(default_factory=dict)
    notes: Mapping[str, str] = field(default_factory=dict)

    def to_tree(self) -> dict[str, Any]:
        def plain(value: Any) -> Any:
            if isinstance(value, Mapping):
                return {k: plain(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)) and value and not isinstance(value[0], str):
                return np.asarray(value)
            return value

        return {
            "layers": {name: plain(values) for name, values in self.layers.items()},
            "summary": plain(dict(self.summary)),
            "notes": dict(self.notes),
        }


def nan_stats(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation over the first axis (images), ignoring NaN."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0 or np.isnan(values).all():
        shape = values.shape[1:]
        return np.full(shape, np.nan), np.full(shape, np.nan)
    with np.errstate(invalid="ignore"):
        count = np.sum(~np.isnan(values), axis=0)
        mean = np.nanmean(values, axis=0)
        std = np.nanstd(values, axis=0, ddof=1) if values.shape[0] > 1 else np.zeros_like(mean)
    return np.where(count > 0, mean, np.nan), std


def nonfinite_note(layer: LayerInput, *, state: bool = False) -> str | None:
    """Why a layer whose captures held NaN or inf gets no number; None when they did not.

    The capture counts the batches whose attention probabilities (attention layers) or
    activations (channel layers) were not finite (``nonfinite_batches``). Such a layer
    is left out rather than averaged over its finite images, which would report a clean
    number for a broken layer.

    Args:
        layer: The layer's inputs.
        state: Also check the accumulator states (moments, CKA sums), e.g. per-head
            outputs that are not finite while the probabilities are.
    """
    batches = int(layer.attrs.get("nonfinite_batches", 0) or 0)
    what = "attention probabilities" if layer.kind == "attention" else "activations"
    if batches:
        plural = "es" if batches > 1 else ""
        return (
            f"not measured: NaN or inf in the {what} of {batches} batch{plural} "
            "(a mean over the finite images would hide it)"
        )
    if state:
        for part in (layer.moments, layer.groups):
            for value in (part or {}).values():
                if not np.isfinite(np.asarray(value, dtype=np.float64)).all():
                    return "not measured: NaN or inf in the accumulated statistics of its outputs"
    return None
