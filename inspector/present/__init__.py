"""Presentation of a run file: the report view model (the only bridge to ``reports``) and
the terminal text (per-layer summary, ``inspector info``, ``inspector models``).

Everything here reads analyzer results through :meth:`inspector.store.Run.result` (typed
fields, never the stored trees' keys).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._dynamics import verdict_lines as dynamics_verdict_lines
from ._export import export_tables as export_tables
from ._rows import LayerRow as LayerRow
from ._rows import RunResults as RunResults
from ._rows import failed_analyses as failed_analyses
from ._rows import layer_rows as layer_rows
from ._terminal import describe as describe
from ._terminal import describe_models as describe_models
from ._terminal import print_summary as print_summary

if TYPE_CHECKING:
    from ._report import compare_view as compare_view
    from ._report import run_view as run_view
    from ._report import write_compare_report as write_compare_report
    from ._report import write_run_report as write_run_report

# The report bridge imports the renderer (matplotlib, jinja2) and timm: it loads on first
# use, so that `inspector info` stays quick.
_LAZY = frozenset({"compare_view", "run_view", "write_compare_report", "write_run_report"})

__all__ = [
    "LayerRow",
    "RunResults",
    "compare_view",
    "describe",
    "describe_models",
    "dynamics_verdict_lines",
    "export_tables",
    "failed_analyses",
    "layer_rows",
    "print_summary",
    "run_view",
    "write_compare_report",
    "write_run_report",
]


def __getattr__(name: str) -> Any:
    """Import the report bridge on first access (PEP 562)."""
    if name in _LAZY:
        from . import _report

        value = getattr(_report, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
