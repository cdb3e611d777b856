"""``open_run``: read a run file without importing torch or timm (a second, not six)."""

from __future__ import annotations

from pathlib import Path

from .store import Run, read_run

__all__ = ["open_run"]


def open_run(path: str | Path, *, verify: bool = True) -> Run:
    """Read a complete run file (plain numpy arrays and dataclasses; no model needed, and
    neither torch nor timm is imported).

    Args:
        path: The run file.
        verify: Check its content against its checksum manifest; ``False`` reads a
            damaged file as it is (forensics).
    """
    return read_run(path, verify=verify)
