"""Tables of a run for pandas, built from the typed result declarations.

Nothing here names an analyzer's fields: every field declared with
:func:`inspector.analyzers._record.array` or ``value`` becomes columns of the table its
dimension labels put it in, named ``<analysis>.<field>``. A field an analyzer adds later
(an interval's ``mean_low``/``mean_high``) appears without a change here.

Tables (the ``table`` argument of :meth:`Run.to_dataframe`):

``heads``
    One row per (layer, head) of the attention layers: every layer-record array whose one
    dimension is ``head`` (or ``unit`` of a layer with heads) and whose length is the
    layer's head count; plus ``locality`` (``local``/``mixed``/``global``, from
    ``distance.mean`` / ``distance.uniform``).
``units``
    One row per (layer, unit) of every layer: arrays whose one dimension is ``head``,
    ``channel`` or ``unit``, of the layer's unit count.
``layers``
    One row per layer: the layer's kind, heads and channels, then every number, flag or
    string of every layer record (``(y, x)`` pairs as ``<field>_y``, ``<field>_x``).
``pruning``
    One row per (analysis, key, step): summary-record arrays along ``step``, with the
    record's numbers repeated on each row.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import fields
from typing import TYPE_CHECKING, Any

import numpy as np

from .._errors import InspectorError
from ..analyzers import GLOBAL, LOCAL, REGISTRY, AnalysisResult, Record

if TYPE_CHECKING:
    import pandas as pd

# ``Run`` (``._reader``) imports this module lazily for its methods; annotating with it
# here would be an import cycle, so a run is ``Run`` in the docstrings and ``Any`` here.
Run = Any

__all__ = ["TABLES", "table_rows", "to_dataframe"]

TABLES = ("heads", "units", "layers", "pruning")

_UNIT_DIMS = {"heads": ("head", "unit"), "units": ("head", "channel", "unit")}


def _pandas() -> Any:
    try:
        import pandas
    except ImportError as exc:
        raise InspectorError(
            "to_dataframe needs pandas: pip install 'inspector[pandas]' (or pip install pandas)"
        ) from exc
    return pandas


def _results(run: Run) -> Iterator[tuple[str, AnalysisResult]]:
    """The typed results the run holds and this inspector can read, in stored order."""
    for name in run.analysis:
        if name in REGISTRY:
            yield name, run.result(name)


def _unit_count(run: Run, layer: str, table: str) -> int | None:
    item = run.layers.get(layer)
    if item is None:
        return None
    if table == "heads":
        return (
            int(item.attrs["heads"]) if item.kind == "attention" and "heads" in item.attrs else None
        )
    key = "heads" if item.kind == "attention" else "channels"
    return int(item.attrs[key]) if key in item.attrs else None


def _scalar(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    return x


def _value_columns(name: str, record: Record) -> dict[str, Any]:
    """Numbers, flags, strings and pairs of a record as ``<analysis>.<field>`` columns."""
    out: dict[str, Any] = {}
    for f in fields(record):
        item = getattr(record, f.name)
        kind = f.metadata.get("kind")
        if kind == "value":
            out[f"{name}.{f.name}"] = _scalar(item)
        elif kind == "pair":
            y, x = item if item is not None else (np.nan, np.nan)
            out[f"{name}.{f.name}_y"], out[f"{name}.{f.name}_x"] = y, x
        elif kind == "record" and item is not None:
            out.update(_value_columns(f"{name}.{f.name}", item))
    return out


def _unit_rows(run: Run, table: str) -> list[dict[str, Any]]:
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    dims = _UNIT_DIMS[table]
    for name, result in _results(run):
        for layer, record in result.layers.items():
            count = _unit_count(run, layer, table)
            if count is None:
                continue
            for f in fields(record):
                item = getattr(record, f.name)
                if f.metadata.get("kind") != "array" or item is None:
                    continue
                if len(f.metadata["dims"]) != 1 or f.metadata["dims"][0] not in dims:
                    continue
                values = np.asarray(item)
                if values.shape != (count,):
                    continue  # e.g. the ablated subset of units
                for unit in range(count):
                    row = rows.setdefault(
                        (layer, unit),
                        {"layer": layer, "head" if table == "heads" else "unit": unit},
                    )
                    row[f"{name}.{f.name}"] = _scalar(values[unit])
    order = {name: i for i, name in enumerate(run.layers)}
    out = [rows[key] for key in sorted(rows, key=lambda k: (order.get(k[0], len(order)), k[1]))]
    for row in out:
        item = run.layers.get(row["layer"])
        row.setdefault("kind", item.kind if item else "")
    if table == "heads":
        _add_locality(run, out)
    return out


def _add_locality(run: Run, rows: list[dict[str, Any]]) -> None:
    """``attention_distance.fraction_of_uniform`` and ``locality`` where distance was measured."""
    if "attention_distance" not in run.analysis:
        return
    layers = run.result("attention_distance").layers
    for row in rows:
        record = layers.get(row["layer"])
        mean = row.get("attention_distance.mean")
        uniform = getattr(record, "uniform", None)
        if record is None or mean is None or not uniform or not np.isfinite(mean):
            row["attention_distance.fraction_of_uniform"] = np.nan
            row["locality"] = ""
            continue
        fraction = float(mean) / float(uniform)
        row["attention_distance.fraction_of_uniform"] = fraction
        row["locality"] = (
            "local" if fraction < LOCAL else "global" if fraction > GLOBAL else "mixed"
        )


def _layer_rows(run: Run) -> list[dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for layer, item in run.layers.items():
        rows[layer] = {
            "layer": layer,
            "kind": item.kind,
            "heads": item.attrs.get("heads"),
            "channels": item.attrs.get("channels"),
        }
    for name, result in _results(run):
        for layer, record in result.layers.items():
            row = rows.setdefault(layer, {"layer": layer, "kind": ""})
            row.update(_value_columns(name, record))
    order = {name: i for i, name in enumerate(run.layers)}
    return sorted(rows.values(), key=lambda r: order.get(r["layer"], len(order)))


def _pruning_rows(run: Run) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for name, result in _results(run):
        for key, record in result.summary.items():
            steps = {
                f.name: np.asarray(getattr(record, f.name))
                for f in fields(record)
                if f.metadata.get("kind") == "array"
                and getattr(record, f.name) is not None
                and f.metadata["dims"] == ("step",)
            }
            if not steps:
                continue
            scalars = _value_columns(name, record)
            length = min(len(v) for v in steps.values())
            for step in range(length):
                row: dict[str, Any] = {"analysis": name, "kind": key, "step": step}
                row.update({f"{name}.{f}": _scalar(v[step]) for f, v in steps.items()})
                row.update(scalars)
                out.append(row)
    return out


def table_rows(run: Run, table: str) -> list[dict[str, Any]]:
    """The rows of ``table`` as plain dicts (no pandas needed).

    Raises:
        InspectorError: ``table`` is not one of :data:`TABLES`.
    """
    if table not in TABLES:
        raise InspectorError(f"unknown table {table!r}; choose one of: {', '.join(TABLES)}")
    if table == "layers":
        return _layer_rows(run)
    if table == "pruning":
        return _pruning_rows(run)
    return _unit_rows(run, table)


_INDEX = {"heads": ["layer", "head"], "units": ["layer", "unit"], "layers": ["layer"]}


def to_dataframe(run: Run, table: str = "heads") -> pd.DataFrame:
    """``table`` of ``run`` as a pandas DataFrame (see the module docstring).

    Raises:
        InspectorError: pandas is not installed, or ``table`` is unknown.
    """
    rows = table_rows(run, table)
    pandas = _pandas()
    frame = pandas.DataFrame.from_records(rows)
    index = _INDEX.get(table)
    if index and not frame.empty:
        frame = frame.set_index(index)
    return frame


def _fmt(value: Any, digits: int = 1) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "-"
    return "-" if not np.isfinite(number) else f"{number:.{digits}f}"


def _headline(run: Run) -> list[dict[str, str]]:
    """Per layer: kind, units, mean attention distance (range over heads), MAD_centre,
    ERF distance, like-for-like CKA redundancy and |r| redundancy, as text."""
    heads: dict[str, list[float]] = {}
    centre: dict[str, list[float]] = {}
    for row in _unit_rows(run, "heads"):
        for column, into in (("mean", heads), ("centre_mean", centre)):
            value = row.get(f"attention_distance.{column}")
            if value is not None:
                into.setdefault(row["layer"], []).append(float(value))
    out = []
    for row in _layer_rows(run):
        distances = np.array(heads.get(row["layer"], []), dtype=np.float64)
        finite = distances[np.isfinite(distances)]
        mad = f"{finite.mean():.1f} ({finite.min():.0f}-{finite.max():.0f})" if finite.size else "-"
        centres = np.array(centre.get(row["layer"], []), dtype=np.float64)
        centres = centres[np.isfinite(centres)]
        # like for like: heads by CKA, channels by CKA of groups of head width
        cka = row.get(
            "head_redundancy.redundancy", row.get("channel_redundancy.grouped.redundancy")
        )
        units = row.get("heads") if row["kind"] == "attention" else row.get("channels")
        out.append(
            {
                "layer": str(row["layer"]),
                "kind": str(row["kind"] or row.get("receptive_field.branch") or "-"),
                "units": "-" if units is None else str(units),
                "MAD px (min-max)": mad,
                "MADc px": f"{centres.mean():.1f}" if centres.size else "-",
                "ERF px": _fmt(row.get("receptive_field.mean_distance")),
                "ERF of": str(row.get("receptive_field.branch") or "-"),
                "CKA redund": _fmt(cka, 2),
                "|r| redund": _fmt(row.get("channel_redundancy.redundancy"), 2),
            }
        )
    return out


_LEGEND = (
    "MAD: mean attention distance of the heads, input pixels (range over heads); "
    "MADc: the same for the centre query, the one comparable with the ERF; "
    "ERF: mass-weighted mean distance of the effective receptive field from its centre, "
    "pixels, of the branch named in 'ERF of' (block: after the residual; attention: the "
    "attention branch before it; conv: the layer's output); redundancy: 1 - effective "
    "units / units (0 none, towards 1 all alike), CKA: heads, or channel groups of head "
    "width (like for like), |r|: single channels (secondary); intervals: "
    "to_dataframe(); definitions: docs/metrics.md"
)


def _header(run: Run) -> list[tuple[str, str]]:
    meta = run.meta
    return [
        ("model", run.model),
        ("weights", f"{meta.get('weights_source', '?')}"),
        ("images", f"{len(run.sample_ids)} ({meta.get('images_source', '?')})"),
        (
            "layers",
            f"{len(run.attention_layers)} attention, {len(run.channel_layers)} channel",
        ),
        ("analyses", ", ".join(run.analysis) or "none"),
        ("complete", "yes" if run.complete else "no"),
        ("file", str(run.path)),
    ]


def summary_text(run: Run) -> str:
    """:meth:`Run.summary`: header lines, the per-layer table and its legend."""
    lines = [f"{key + ':':<10}{value}" for key, value in _header(run)]
    rows = _headline(run)
    if rows:
        keys = list(rows[0])
        widths = {k: max(len(k), *(len(r[k]) for r in rows)) for k in keys}
        lines.append("")
        lines.append("  ".join(k.ljust(widths[k]) for k in keys).rstrip())
        lines.extend("  ".join(r[k].ljust(widths[k]) for k in keys).rstrip() for r in rows)
        lines.append(_LEGEND)
    return "\n".join(lines)


def summary_html(run: Run) -> str:
    """The notebook view (``Run._repr_html_``): header and per-layer table, escaped."""
    from html import escape

    head = "".join(
        f"<tr><th style='text-align:left'>{escape(k)}</th><td style='text-align:left'>"
        f"{escape(v)}</td></tr>"
        for k, v in _header(run)
    )
    rows = _headline(run)
    table = ""
    if rows:
        keys = list(rows[0])
        table = (
            "<table><thead><tr>"
            + "".join(f"<th>{escape(k)}</th>" for k in keys)
            + "</tr></thead><tbody>"
            + "".join(
                "<tr>" + "".join(f"<td>{escape(r[k])}</td>" for k in keys) + "</tr>" for r in rows
            )
            + f"</tbody></table><p><small>{escape(_LEGEND)}</small></p>"
        )
    return f"<div><strong>inspector run</strong><table>{head}</table>{table}</div>"
