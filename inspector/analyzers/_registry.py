"""The analyzer registry: analyzers register by name with a decorator; a clash raises."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, TypeVar

import numpy as np

__all__ = ["REGISTRY", "AnalysisInputs", "Analyzer", "LayerInput", "Registry", "Result"]


@dataclass(frozen=True)
class LayerInput:
    """What the capture pass stored for one layer, as plain arrays.

    Attributes:
        name: Module path.
        kind: ``attention`` or ``channel``.
        attrs: Geometry (``geometry``), ``heads``, ``channels``, ``site`` ...
        summaries: Per-image summaries ``[sample, head]`` by name.
        maps: First-K attention maps ``[sample, head, query, key]`` or None.
        moments: ``count``, ``mean``, ``comoment`` or None.
        groups: CKA sums (``GroupSums`` state) or None.
        distances: ``[query, key]`` pixel distances between spatial tokens, or None.
    """

    name: str
    kind: str
    attrs: Mapping[str, Any]
    summaries: Mapping[str, np.ndarray] = field(default_factory=dict)
    maps: np.ndarray | None = None
    moments: Mapping[str, np.ndarray] | None = None
    groups: Mapping[str, np.ndarray] | None = None
    distances: np.ndarray | None = None


@dataclass(frozen=True)
class AnalysisInputs:
    """Everything analyzers read: captured layers and the outputs of the model passes.

    Attributes:
        layers: Captured layers in model order.
        erf: Per ERF layer: ``map`` ``[y, x]`` (mean |∂s/∂x| over images), ``centre``
            ``(y, x)`` in input pixels, ``branch`` (``block``, ``attention``, ``conv``),
            ``depth`` (position in the model, 0-1), ``images``.
        gates: Raw gate gradients ``[sample, unit]`` per layer, under ``heads`` / ``channels``.
        pruning: Per unit type: ``fractions``, ``agreement``, ``kl``, plus ``ablation``
            (``units``, ``delta`` true single-unit ablation effects).
    """

    layers: Mapping[str, LayerInput]
    erf: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    gates: Mapping[str, Mapping[str, np.ndarray]] = field(default_factory=dict)
    pruning: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


class Result(Protocol):
    """A frozen dataclass of arrays; ``to_tree`` gives its run-file form."""

    def to_tree(self) -> dict[str, Any]: ...


class Analyzer(Protocol):
    """Parameters in ``__init__``, one ``compute``; no I/O, no hooks (STYLE rule 8)."""

    name: ClassVar[str]
    version: ClassVar[str]
    needs: ClassVar[frozenset[str]]

    def params(self) -> dict[str, Any]: ...

    def compute(self, inputs: AnalysisInputs) -> Result: ...


A = TypeVar("A", bound=type)


class Registry:
    """Analyzer classes by name."""

    def __init__(self) -> None:
        self._classes: dict[str, type] = {}

    def register(self, cls: A) -> A:
        name = cls.name  # type: ignore[attr-defined]
        if name in self._classes:
            raise ValueError(f"analyzer {name!r} is already registered")
        self._classes[name] = cls
        return cls

    def __getitem__(self, name: str) -> Callable[..., Analyzer]:
        try:
            return self._classes[name]
        except KeyError:
            raise KeyError(
                f"no analyzer {name!r}; registered: {', '.join(sorted(self._classes))}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._classes

    def __iter__(self) -> Iterator[str]:
        return iter(self._classes)

    def needs(self, names: list[str]) -> set[str]:
        return set().union(*(self._classes[n].needs for n in names))  # type: ignore[attr-defined]


REGISTRY = Registry()
