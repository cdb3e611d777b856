"""The report's tables (per layer, per head, fixed vs dynamic), from a run file."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

import reports

from ..analyzers import GLOBAL, LOCAL, EquivarianceResult, InputDependenceResult
from ..store import Run, table_rows
from ._dynamics import dynamics_rows
from ._rows import RunResults, _optional, layer_rows

__all__ = ["dynamics_table", "head_table", "layer_table", "number"]


def number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def layer_table(run: Run, results: RunResults) -> reports.Table:
    rows = layer_rows(run, results)
    columns = (
        "layer",
        "kind",
        "units",
        "CKA redundancy (like for like)",
        "CKA redundancy 95 % low",
        "CKA redundancy 95 % high",
        "|r| redundancy (secondary)",
        "|r| redundancy 95 % low",
        "|r| redundancy 95 % high",
        "rows",
        "sample-limited",
        "MAD px",
        "MAD min",
        "MAD max",
        "MAD_centre px",
        "MAD_centre low",
        "MAD_centre high",
        "ERF px",
        "ERF low",
        "ERF high",
        "TRF px",
        "r50 px",
        "r50 low",
        "r50 high",
        "r90 px",
        "r90 low",
        "r90 high",
    )
    cells = tuple(
        (
            r.layer,
            r.kind,
            r.units,
            number(r.redundancy),
            number(r.redundancy_low),
            number(r.redundancy_high),
            number(r.correlation_redundancy),
            number(r.correlation_low),
            number(r.correlation_high),
            r.rows,
            "yes" if r.sample_limited else "no",
            number(r.distance),
            number(r.distance_min),
            number(r.distance_max),
            number(r.centre),
            number(r.centre_low),
            number(r.centre_high),
            number(r.erf_distance),
            number(r.erf_low),
            number(r.erf_high),
            "all" if math.isinf(r.theoretical_rf) else number(r.theoretical_rf),
            number(r.erf_radius_50),
            number(r.r50_low),
            number(r.r50_high),
            number(r.erf_radius_90),
            number(r.r90_low),
            number(r.r90_high),
        )
        for r in rows
    )
    return reports.Table(
        "per-layer numbers",
        columns,
        cells,
        "one row per captured or ERF layer; CKA redundancy: debiased CKA between heads, or "
        "between channel groups of head width (like for like), with its 95 % batch-means "
        "interval over contiguous image groups; |r| redundancy: single channels, secondary "
        "(depends on the channel count), its interval the same way; rows: sampled "
        "positions x images; MAD_centre (mean over heads), ERF mean distance and the ERF "
        "radii holding 50 % / 90 % of its mass (r50, r90) with 95 % bootstrap intervals "
        "over images; TRF: theoretical receptive field side ('all': unbounded)",
    )


def dynamics_table(run: Run) -> reports.Table | None:
    rows = dynamics_rows(_optional(run, InputDependenceResult), _optional(run, EquivarianceResult))
    if not rows:
        return None
    columns = (
        "layer",
        "branch",
        "D heads nats (min)",
        "D heads nats (median)",
        "D heads nats (max)",
        "head images",
        "D ERF nats",
        "D ERF low",
        "D ERF high",
        "D ERF normalised",
        "ERF images",
        "E stride shift",
        "E low",
        "E high",
        "E sub-stride",
        "E unaligned",
        "stride px",
        "E images",
    )

    def heads(fn: Any, values: np.ndarray) -> float | None:
        values = values[np.isfinite(values)]
        return float(fn(values)) if values.size else None

    cells = tuple(
        (
            r.layer,
            r.branch,
            heads(np.nanmin, r.heads),
            heads(np.nanmedian, r.heads),
            heads(np.nanmax, r.heads),
            r.head_images,
            number(r.erf),
            number(r.erf_low),
            number(r.erf_high),
            number(r.erf_normalised),
            r.erf_images,
            number(r.equivariance),
            number(r.low),
            number(r.high),
            number(r.sub),
            number(r.unaligned),
            number(r.stride),
            r.images,
        )
        for r in rows
    )
    return reports.Table(
        "fixed vs dynamic, equivariance",
        columns,
        cells,
        "input dependence D (docs/metrics.md §8, 95 % jackknife intervals) and translation "
        "equivariance E (§9, 95 % bootstrap intervals) per layer",
    )


def head_table(run: Run) -> reports.Table | None:
    """One row per head: every per-head field of the run's results (the columns of
    ``Run.to_dataframe("heads")``, built from the declarations, so interval fields appear
    as they are added), and the head's locality."""
    rows = table_rows(run, "heads")
    if not rows:
        return None
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    names = tuple(columns)
    cells = tuple(tuple(_cell(row.get(c)) for c in names) for row in rows)
    return reports.Table(
        "per-head numbers",
        names,
        cells,
        "one row per attention head: distance MAD and MAD_centre (px), entropy (nats), "
        "prefix mass, importance; _low/_high: 95 % bootstrap interval over images; "
        f"locality (local below {LOCAL:.0%}, global above {GLOBAL:.0%} of the uniform "
        "distance); docs/metrics.md §1, §2, §5, §7",
    )


def _cell(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return number(value)
    return value
