"""The ``inspector`` command line as a function: ``main(["analyze", "deit_small"])`` returns
the exit status (0 success, 1 a clean one-line error, 2 a usage error)."""

from __future__ import annotations

from ._cli import main as main

__all__ = ["main"]
