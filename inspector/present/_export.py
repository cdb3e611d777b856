"""``inspector export``: a run's tables as CSV, Parquet or JSON files.

CSV and JSON need only the standard library; Parquet needs pandas and pyarrow (the
``pandas`` extra). The columns are those of :meth:`inspector.store.Run.to_dataframe`.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._errors import InspectorError
from ..store import Run, table_rows, to_dataframe

__all__ = ["export_tables"]

FORMATS = ("csv", "parquet", "json")


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def _plain(value: Any) -> Any:
    """JSON has no NaN: a missing number is ``null``."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def export_tables(run: Run, tables: Sequence[str], fmt: str, folder: str | Path) -> list[Path]:
    """Write ``<run stem>.<table>.<fmt>`` into ``folder`` for each table with rows.

    Returns:
        The files written.

    Raises:
        InspectorError: Unknown format, or Parquet without pandas/pyarrow.
    """
    if fmt not in FORMATS:
        raise InspectorError(f"unknown format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for table in tables:
        rows = table_rows(run, table)
        if not rows:
            continue
        path = folder / f"{run.path.stem}.{table}.{fmt}"
        if fmt == "csv":
            with path.open("w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=_columns(rows), restval="")
                writer.writeheader()
                writer.writerows(rows)
        elif fmt == "json":
            data = [{k: _plain(v) for k, v in row.items()} for row in rows]
            path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        else:
            try:
                import pyarrow  # noqa: F401
            except ImportError as exc:
                raise InspectorError(
                    "--format parquet needs pandas and pyarrow: pip install 'inspector[pandas]'"
                ) from exc
            to_dataframe(run, table).reset_index().to_parquet(path, index=False)
        written.append(path)
    return written
