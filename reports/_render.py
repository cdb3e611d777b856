"""Render a view model to one self-contained HTML page, and write it atomically.

One Jinja2 environment, autoescaping every expression, loads the templates
shipped in ``reports/templates``. What the page shows is declared
section by section (:mod:`reports._sections`): the renderer asks every section
spec of the page for its context, in order, and the page template includes each
section's partial; every string in the page goes through the template.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
from pathlib import Path
from typing import Any

import jinja2

from ._errors import ReportError
from ._sections import SectionList
from ._sections_compare import COMPARE_SECTIONS
from ._sections_run import RUN_SECTIONS
from ._tables import format_cell
from ._view import RunReport
from ._view_compare import CompareReport

__all__ = ["render_compare_report", "render_run_report", "render_sections", "write_report"]


@functools.cache
def environment() -> jinja2.Environment:
    """The one Jinja2 environment of :mod:`reports` (autoescaping, strict undefined)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("reports", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["cell"] = format_cell
    env.filters["pct"] = lambda x: "—" if x is None else f"{x:.0%}"
    return env


def _page(view: RunReport | CompareReport) -> tuple[str, dict[str, Any]]:
    """The page template of ``view`` and the facts its masthead and footer show."""
    if isinstance(view, RunReport):
        header = view.header
        return "report.html.j2", {
            "header": header,
            "tool_version": header.tool_version,
            "created": header.created,
            "random_runs": [header.model] if header.weights.source == "random" else [],
        }
    if isinstance(view, CompareReport):
        return "compare.html.j2", {
            "tool_version": view.tool_version,
            "created": view.created,
            "random_runs": [r.label for r in view.runs if r.weights.source == "random"],
        }
    raise ReportError(f"cannot render a {type(view).__name__}: need a RunReport or CompareReport")


def render_sections(
    view: RunReport | CompareReport,
    sections: SectionList[Any],
    *,
    env: jinja2.Environment | None = None,
) -> str:
    """The HTML page of ``view`` with the given sections, in their order.

    The page template and the masthead facts follow from the type of ``view``;
    every section is drawn by its spec (see :mod:`reports._sections`).

    Args:
        view: What to show.
        sections: The section specs of the page, e.g. ``RUN_SECTIONS``.
        env: The Jinja2 environment; defaults to :func:`environment`.

    Returns:
        A complete, self-contained HTML document.
    """
    template, facts = _page(view)
    context = {"view": view, **facts, "sections": sections.sections(view)}
    return (env or environment()).get_template(template).render(context)


def render_run_report(view: RunReport) -> str:
    """The HTML page of one run.

    Args:
        view: What to show; sections left empty are marked 'not measured'.

    Returns:
        A complete, self-contained HTML document.
    """
    if not isinstance(view, RunReport):
        raise ReportError(f"render_run_report needs a RunReport, got {type(view).__name__}")
    return render_sections(view, RUN_SECTIONS)


def render_compare_report(view: CompareReport) -> str:
    """The HTML page comparing several runs on shared axes.

    Args:
        view: The runs and their series; a summary table (one row per run) is added.

    Returns:
        A complete, self-contained HTML document.
    """
    if not isinstance(view, CompareReport):
        raise ReportError(f"render_compare_report needs a CompareReport, got {type(view).__name__}")
    return render_sections(view, COMPARE_SECTIONS)


def _remove(path: Path) -> None:
    """Remove a scratch file, best effort: a failure here (a read-only folder) must not
    hide the error that brought us here."""
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


def write_report(html: str, path: str | os.PathLike[str]) -> Path:
    """Write ``html`` to ``path`` atomically (a temporary file beside it, then a rename).

    Args:
        html: The rendered page.
        path: Destination file; its folder must exist.

    Returns:
        The destination path.

    Raises:
        ReportError: When the folder does not exist or the file cannot be written.
    """
    dest = Path(path)
    if not dest.parent.is_dir():
        raise ReportError(
            f"cannot write report {dest}: folder {dest.parent} does not exist (create it first)"
        )
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(html)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except OSError as exc:
        _remove(tmp)
        raise ReportError(f"cannot write report {dest}: {exc.strerror or exc}") from exc
    except BaseException:
        _remove(tmp)
        raise
    return dest
