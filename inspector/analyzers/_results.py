"""Helpers every analyzer uses: NaN-aware statistics over images, the note of a broken layer.

The result types are in ``_record`` (base classes) and beside each analyzer."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ._registry import LayerInput

__all__ = ["nan_stats", "nonfinite_note"]


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
