"""The one axis vocabulary (DESIGN.md §6, STYLE rule 10): HDF5 dimension labels of the run
file and the declared dimensions of every analyzer result field."""

from __future__ import annotations

__all__ = ["AXES", "DIM_LABELS"]

AXES = ("sample", "token", "channel", "head", "query", "key", "layer", "window", "unit", "step")
"""Axes of the model and the run: DESIGN.md's ``sample, token, channel, head, query, key,
layer`` plus ``window`` (one attention sequence of a windowed map), ``unit`` (a head or a
channel, whichever a layer has) and ``step`` (a point of a pruning curve)."""

DIM_LABELS = (
    *AXES, "y", "x", "feature", "group", "image_group", "open_group", "layout", "statistic",
    "threshold", "bound",
)  # fmt: skip
"""Every dimension label a run file or an analyzer result may carry: :data:`AXES`, plus
``y``/``x`` for pixel maps, ``feature``/``group`` for the columns of accumulator states
(a group is one head's slice, or ``head_dim`` consecutive channels), ``image_group``
/ ``open_group`` for the closed / still-open contiguous image groups of the CKA
intervals (``layout``: their sizes; ``statistic``: the |r| summaries kept per
group), ``threshold``
for values per entry of an analyzer's thresholds parameter and ``bound`` for the
``(low, high)`` ends of a 95 % interval."""
