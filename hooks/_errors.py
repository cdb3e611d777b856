"""Exceptions raised by the capture engine."""

from __future__ import annotations

__all__ = ["CaptureError", "HookError", "SelectionError"]


class HookError(Exception):
    """Root of every error raised by :mod:`hooks`."""


class SelectionError(HookError, LookupError):
    """A layer selection (glob over ``named_modules()`` paths) matched nothing usable."""


class CaptureError(HookError, RuntimeError):
    """A capture could not be set up or its tensors were not what the hook expected."""
