"""Typed analyzer results: frozen dataclasses of named fields, and their run-file trees.

A result is an :class:`AnalysisResult`: ``layers`` (per layer path, one record of the
analyzer's layer type), ``summary`` (model-level records by key, e.g. by unit kind),
``params``, ``notes`` and ``version``. Records are frozen dataclasses whose fields are
declared with :func:`array` (dimension labels from the one vocabulary,
``inspector._axes.DIM_LABELS``), :func:`value` (a number, flag or string), :func:`pair`
(a ``(y, x)`` position) or :func:`record` (a nested record). The declarations drive the
run-file tree (:meth:`AnalysisResult.to_tree`, :meth:`AnalysisResult.from_tree`) and
the schema section of docs/run-file.md (:func:`results_schema_markdown`).

The tree is the one the run file stores under ``analysis/<name>/`` (docs/run-file.md):
a field named ``f`` is the key ``f``; arrays are datasets, numbers, flags and strings
attributes, records groups; an optional field that is ``None`` is left out.
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from functools import cache
from typing import Any, ClassVar, TypeVar

import numpy as np

from .._axes import DIM_LABELS

__all__ = [
    "AnalysisResult",
    "Record",
    "ResultSchemaError",
    "array",
    "pair",
    "record",
    "value",
]

R = TypeVar("R", bound="AnalysisResult")
T = TypeVar("T", bound="Record")


class ResultSchemaError(ValueError):
    """A stored result tree that does not match its result dataclass."""


def _meta(kind: str, doc: str, optional: bool, **extra: Any) -> Any:
    metadata = {"kind": kind, "doc": doc, **extra}
    if optional:
        return field(default=None, metadata=metadata)
    return field(metadata=metadata)


def array(*dims: str, doc: str, dtype: str = "float64", optional: bool = False) -> Any:
    """A numpy array field with one dimension label per axis.

    Args:
        dims: Labels from ``DIM_LABELS`` (``head``, ``unit``, ``step``, ``y``, ...).
        doc: What the values mean (units included).
        dtype: The dtype written.
        optional: ``None`` (left out of the tree) where not measured.
    """
    unknown = [d for d in dims if d not in DIM_LABELS]
    if unknown:
        raise ValueError(f"dimension labels {unknown} are not in the vocabulary {DIM_LABELS}")
    return _meta("array", doc, optional, dims=tuple(dims), dtype=dtype)


def value(doc: str, *, optional: bool = False) -> Any:
    """A number, flag or string field (``float``, ``int``, ``bool`` or ``str``)."""
    return _meta("value", doc, optional)


def pair(doc: str) -> Any:
    """A ``(y, x)`` position in input pixels, stored as a float64 array of 2."""
    return _meta("pair", doc, False)


def record(doc: str, *, optional: bool = False) -> Any:
    """A nested record (its type is the field's annotation)."""
    return _meta("record", doc, optional)


def _same(a: Any, b: Any) -> bool:
    """Equal values: arrays by dtype, shape and content (NaN equal to NaN)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)):
            return False
        if a.dtype != b.dtype or a.shape != b.shape:
            return False
        return bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and bool(a == b)


def _plain(hint: Any) -> Any:
    """``X`` of ``X | None``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else hint
    return hint


@cache
def _hints(cls: type) -> dict[str, Any]:
    return {name: _plain(hint) for name, hint in typing.get_type_hints(cls).items()}


@dataclass(frozen=True, kw_only=True, eq=False)
class Record:
    """Base of per-layer and summary records; equality compares arrays by value."""

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(_same(getattr(self, f.name), getattr(other, f.name)) for f in fields(self))

    __hash__ = None  # type: ignore[assignment]  # arrays are mutable

    def to_tree(self) -> dict[str, Any]:
        """The record as the run file stores it (``None`` fields left out)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            item = getattr(self, f.name)
            if item is None:
                continue
            kind = f.metadata["kind"]
            if kind == "record":
                out[f.name] = item.to_tree()
            elif kind == "pair":
                out[f.name] = np.asarray(item, dtype=np.float64)
            elif kind == "array":
                out[f.name] = np.asarray(item)
            else:
                out[f.name] = item
        return out

    @classmethod
    def from_tree(cls: type[T], tree: Mapping[str, Any], where: str = "") -> T:
        """The record from its stored tree.

        Raises:
            ResultSchemaError: A field missing, one of the wrong kind, or a key the
                record does not declare.
        """
        if not isinstance(tree, Mapping):
            raise ResultSchemaError(f"{where or cls.__name__}: expected a group")
        hints = _hints(cls)
        declared = {f.name: f for f in fields(cls)}
        unknown = sorted(set(tree) - set(declared))
        if unknown:
            raise ResultSchemaError(f"{where}: undeclared {', '.join(map(repr, unknown))}")
        kwargs: dict[str, Any] = {}
        for name, f in declared.items():
            here = f"{where}/{name}" if where else name
            if name not in tree:
                if f.default is MISSING:
                    raise ResultSchemaError(f"{here} is missing")
                continue
            kwargs[name] = _decode(tree[name], f.metadata["kind"], hints[name], here)
        return cls(**kwargs)


def _decode(item: Any, kind: str, hint: Any, where: str) -> Any:
    if kind == "record":
        return hint.from_tree(item, where)
    if kind in ("array", "pair"):
        if isinstance(item, (Mapping, str)):
            raise ResultSchemaError(f"{where}: expected an array, got {type(item).__name__}")
        data = np.asarray(item)
        if kind == "pair":
            if data.shape != (2,):
                raise ResultSchemaError(f"{where}: expected a (y, x) pair, got {data.shape}")
            return (float(data[0]), float(data[1]))
        return data
    if isinstance(item, (Mapping, np.ndarray)) or hint not in (float, int, bool, str):
        raise ResultSchemaError(f"{where}: expected a {getattr(hint, '__name__', hint)}")
    if hint is bool:
        return bool(item)
    if hint is str:
        return str(item)
    if isinstance(item, str):
        raise ResultSchemaError(f"{where}: expected a {hint.__name__}, got text")
    return hint(item)


@dataclass(frozen=True, kw_only=True, eq=False)
class AnalysisResult:
    """Base of every analyzer's result.

    Subclasses narrow ``layers`` (``Mapping[str, TheirLayerRecord]``) and, when they have
    model-level numbers, ``summary`` (``Mapping[str, TheirSummaryRecord]``); the
    annotations say which record types the tree holds.

    Attributes:
        version: Version of the analyzer that computed it (stored as
            ``analyzer_version``).
        params: The analyzer's parameters (stored as JSON ``params``).
        layers: Per layer path (model order), the layer's record.
        summary: Model-level records by key (e.g. unit kind, ``heads``/``channels``).
        notes: Per layer path (or ``model``, or a unit kind), why a number is missing.
    """

    analyzer: ClassVar[str] = ""

    version: str
    params: Mapping[str, Any] = field(default_factory=dict)
    layers: Mapping[str, Record] = field(default_factory=dict)
    summary: Mapping[str, Record] = field(default_factory=dict)
    notes: Mapping[str, str] = field(default_factory=dict)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(_same(getattr(self, f.name), getattr(other, f.name)) for f in fields(self))

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def record_types(cls) -> tuple[type[Record] | None, type[Record] | None]:
        """The record types of ``layers`` and ``summary`` (``None``: always empty)."""

        def of(name: str) -> type[Record] | None:
            record_type = typing.get_args(_hints(cls)[name])[1]
            return None if record_type is Record else record_type

        return of("layers"), of("summary")

    def to_tree(self) -> dict[str, Any]:
        """The tree the run file stores under ``analysis/<name>/`` (params and version are
        written beside it by the writer)."""
        return {
            "layers": {name: layer.to_tree() for name, layer in self.layers.items()},
            "summary": {key: item.to_tree() for key, item in self.summary.items()},
            "notes": {str(k): str(v) for k, v in self.notes.items()},
        }

    @classmethod
    def from_tree(
        cls: type[R], tree: Mapping[str, Any], params: Mapping[str, Any], version: str
    ) -> R:
        """The result from the tree :func:`inspector.store.read_run` gives (its
        ``params`` and ``analyzer_version`` entries, if present, are ignored in favour
        of the arguments).

        Raises:
            ResultSchemaError: The tree does not match the declared records.
        """
        layer_type, summary_type = cls.record_types()
        parts: dict[str, dict[str, Any]] = {}
        for part, record_type in (("layers", layer_type), ("summary", summary_type)):
            stored = tree.get(part, {})
            if not isinstance(stored, Mapping):
                raise ResultSchemaError(f"{part}: expected a group")
            if record_type is None:
                if stored:
                    raise ResultSchemaError(f"{part}: {cls.analyzer} stores none")
                parts[part] = {}
                continue
            parts[part] = {
                key: record_type.from_tree(item, f"{part}/{key}") for key, item in stored.items()
            }
        notes = tree.get("notes", {})
        if not isinstance(notes, Mapping):
            raise ResultSchemaError("notes: expected a group")
        return cls(
            version=str(version),
            params=dict(params),
            layers=parts["layers"],
            summary=parts["summary"],
            notes={str(k): str(v) for k, v in notes.items()},
        )
