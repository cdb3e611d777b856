"""Validation helpers of the view model: coerce fields to read-only arrays and tuples."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from ._errors import ViewError

__all__ = [
    "UNIT_KINDS",
    "WEIGHT_SOURCES",
    "Cell",
    "UnitKind",
    "as_array",
    "as_tuple",
    "check_depth",
    "check_kind",
    "check_range",
    "set_field",
]

UnitKind = Literal["head", "channel"]
Cell = str | int | float | bool | None

WEIGHT_SOURCES = ("pretrained", "random", "file")
UNIT_KINDS = ("head", "channel")


def set_field(obj: object, name: str, value: object) -> None:
    """Set a field of a frozen dataclass (from its ``__post_init__``)."""
    object.__setattr__(obj, name, value)


def as_array(obj: object, name: str, ndim: int, *, dtype: type = np.float64) -> np.ndarray:
    """Replace field ``name`` of ``obj`` by a read-only copy with ``ndim`` dimensions."""
    value = getattr(obj, name)
    try:
        arr = np.array(value, dtype=dtype, copy=True)
    except (TypeError, ValueError) as exc:
        raise ViewError(f"{type(obj).__name__}.{name} must be numeric: {exc}") from exc
    if arr.ndim != ndim:
        raise ViewError(
            f"{type(obj).__name__}.{name} must have {ndim} dimension(s), got shape {arr.shape}"
        )
    if arr.size == 0:
        raise ViewError(f"{type(obj).__name__}.{name} is empty")
    arr.flags.writeable = False
    set_field(obj, name, arr)
    return arr


def as_tuple(obj: object, name: str, types: type | tuple[type, ...]) -> tuple[Any, ...]:
    """Replace field ``name`` of ``obj`` by a tuple whose items are all ``types``."""
    value = getattr(obj, name)
    if isinstance(value, (str, bytes)):
        raise ViewError(f"{type(obj).__name__}.{name} must be a sequence, not a string")
    items = tuple(value)
    for item in items:
        if not isinstance(item, types):
            raise ViewError(
                f"{type(obj).__name__}.{name} holds a {type(item).__name__}, expected {types}"
            )
    set_field(obj, name, items)
    return items


def check_depth(obj: object) -> None:
    depth: object = obj.depth  # type: ignore[attr-defined]
    if not (isinstance(depth, (int, float)) and 0.0 <= float(depth) <= 1.0):
        raise ViewError(
            f"{type(obj).__name__}.depth must be a fraction of network depth in [0, 1], "
            f"got {depth!r}"
        )
    set_field(obj, "depth", float(depth))


def check_kind(obj: object) -> None:
    kind: object = obj.kind  # type: ignore[attr-defined]
    if kind not in UNIT_KINDS:
        raise ViewError(f"{type(obj).__name__}.kind must be one of {UNIT_KINDS}, got {kind!r}")


def check_range(obj: object, name: str, arr: np.ndarray, lo: float, hi: float) -> None:
    finite = arr[np.isfinite(arr)]
    if finite.size and (finite.min() < lo - 1e-9 or finite.max() > hi + 1e-9):
        raise ViewError(f"{type(obj).__name__}.{name} must lie in [{lo}, {hi}]")
