"""Tables for the page: display strings plus CSV and JSON downloads as ``data:`` URIs.

The downloads carry the view's numbers at full precision (``repr`` of a float
round-trips exactly); the page shows them rounded to four significant digits.
Missing values are empty in CSV and ``null`` in JSON.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ._checks import Cell
from ._view import Table

__all__ = ["TableContext", "format_cell", "table_context", "table_csv", "table_json"]


@dataclass(frozen=True)
class TableContext:
    """A table as the template needs it.

    Attributes:
        name: Caption.
        description: Sentence under the caption.
        columns: Column headings.
        numeric: Per column, whether all its cells are numbers (right-aligned).
        rows: Cells formatted for display.
        csv_href: ``data:`` URI of the CSV download.
        csv_file: Suggested file name of the CSV download.
        json_href: ``data:`` URI of the JSON download.
        json_file: Suggested file name of the JSON download.
    """

    name: str
    description: str
    columns: tuple[str, ...]
    numeric: tuple[bool, ...]
    rows: tuple[tuple[str, ...], ...]
    csv_href: str
    csv_file: str
    json_href: str
    json_file: str


def _is_number(cell: Cell) -> bool:
    return isinstance(cell, (int, float)) and not isinstance(cell, bool)


def format_cell(cell: Cell) -> str:
    """Display form of one cell: four significant digits, ``—`` for missing values."""
    if cell is None or (isinstance(cell, float) and math.isnan(cell)):
        return "—"
    if isinstance(cell, bool):
        return "yes" if cell else "no"
    if isinstance(cell, float):
        return f"{cell:.4g}"
    return str(cell)


def _json_cell(cell: Cell) -> Cell:
    if isinstance(cell, float) and not math.isfinite(cell):
        return None
    return cell


_FORMULA = ("=", "+", "-", "@", "\t", "\r")
"""How a text cell opens when a spreadsheet would run it as a formula (``=HYPERLINK(...)``
in a layer name): OWASP's list for CSV injection."""


def _csv_text(cell: Cell) -> Cell:
    """A text cell that a spreadsheet would take as a formula, prefixed with ``'`` so it
    is shown as text; numbers (a negative number is not text) and other text unchanged."""
    if isinstance(cell, str) and cell.startswith(_FORMULA):
        return "'" + cell
    return cell


def table_csv(table: Table) -> str:
    """The table as CSV text (header row first; missing values empty). Text cells that
    start like a spreadsheet formula (``=``, ``+``, ``-``, ``@``, tab, CR) are prefixed with
    ``'`` (layer and image names come from the model and the run file)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(_csv_text(c) for c in table.columns)
    for row in table.rows:
        writer.writerow(
            "" if c is None or (isinstance(c, float) and math.isnan(c)) else _csv_text(c)
            for c in row
        )
    return buf.getvalue()


def table_json(table: Table) -> str:
    """The table as JSON: ``{"name", "description", "columns", "rows"}``; NaN as ``null``."""
    payload = {
        "name": table.name,
        "description": table.description,
        "columns": list(table.columns),
        "rows": [[_json_cell(c) for c in row] for row in table.rows],
    }
    return json.dumps(payload, ensure_ascii=False, allow_nan=False, indent=1)


def _data_uri(mime: str, text: str) -> str:
    data = base64.b64encode(text.encode("utf-8")).decode("ascii")
    return f"data:{mime};charset=utf-8;base64,{data}"


def slug(text: str) -> str:
    """A file-name-safe version of ``text``."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("._") or "table"


def table_context(table: Table, prefix: str = "") -> TableContext:
    """Display rows and download links of ``table``; files are named ``prefix_name``."""
    stem = slug(f"{prefix}_{table.name}" if prefix else table.name)
    numeric = tuple(
        bool(table.rows) and all(_is_number(row[i]) or row[i] is None for row in table.rows)
        for i in range(len(table.columns))
    )
    return TableContext(
        name=table.name,
        description=table.description,
        columns=table.columns,
        numeric=numeric,
        rows=tuple(tuple(format_cell(c) for c in row) for row in table.rows),
        csv_href=_data_uri("text/csv", table_csv(table)),
        csv_file=f"{stem}.csv",
        json_href=_data_uri("application/json", table_json(table)),
        json_file=f"{stem}.json",
    )


def tables_context(tables: Sequence[Table], prefix: str = "") -> list[TableContext]:
    """:func:`table_context` of every table."""
    return [table_context(t, prefix) for t in tables]
