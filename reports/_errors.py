"""The exception tree of :mod:`reports`."""

from __future__ import annotations

__all__ = ["ReportError", "ViewError"]


class ReportError(Exception):
    """Root of every error :mod:`reports` raises on purpose."""


class ViewError(ReportError, ValueError):
    """A view model whose fields are inconsistent (wrong shape, range or length)."""
