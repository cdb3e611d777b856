"""The analyzer registry: analyzers register by name with a decorator; a clash raises."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

import numpy as np

if TYPE_CHECKING:
    from ._record import AnalysisResult

__all__ = [
    "REGISTRY",
    "AblationInput",
    "AnalysisInputs",
    "Analyzer",
    "ErfInput",
    "GateInput",
    "LayerInput",
    "PruningInput",
    "Registry",
]


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
        image_groups: CKA pieces per contiguous image group (``hooks.ImageGroups``
            state), or None.
        distances: ``[query, key]`` pixel distances between spatial tokens, or None.
        slots: For windows zero-padded at the border, which query and key slots of each
            window of one image are real tokens (``[window, query]``, ``[window, key]``
            booleans); ``None`` when nothing is padded.
    """

    name: str
    kind: str
    attrs: Mapping[str, Any]
    summaries: Mapping[str, np.ndarray] = field(default_factory=dict)
    maps: np.ndarray | None = None
    moments: Mapping[str, np.ndarray] | None = None
    groups: Mapping[str, np.ndarray] | None = None
    image_groups: Mapping[str, np.ndarray] | None = None
    distances: np.ndarray | None = None
    slots: tuple[np.ndarray, np.ndarray] | None = None


@dataclass(frozen=True)
class ErfInput:
    """One layer of the gradient ERF pass, or why it was skipped.

    Attributes:
        map: ``[y, x]`` mean over images of ``|∂s/∂x|`` summed over colour channels, or
            ``None`` for a skipped layer.
        centre: ``(y, x)`` of the selected output unit in input pixels (pixel indices).
        branch: ``block`` (after the residual), ``attention`` (the branch before it) or
            ``conv`` (plain CNNs).
        position: Which output unit was selected and how its centre was placed
            (``token 55 (grid 5, 5 of 10x10)``).
        reason: Why a skipped layer has no map.
        weighted: ``[sample]`` per image ``Σ_p m_p ‖p − centre‖`` of its own map ``m``
            (for the interval of the mean distance), or ``None``.
        mass: ``[sample]`` per image ``Σ_p m_p``, or ``None``.
        profile: ``[sample, radius]`` per image the mass ``Σ m_p`` over the pixels at each
            distance of ``radii`` from the centre (for the intervals of the radii), or
            ``None``.
        radii: ``[radius]`` the distinct pixel distances from the centre, ascending.
        theoretical_rf: Side in input pixels of the region that can reach the centre
            unit (``inf`` unbounded, NaN unknown).
        replknet_map: ``[y, x]`` the map of RepLKNet's protocol (ReLU on the centre
            activations and on the gradient, mean over images), or ``None``.
    """

    map: np.ndarray | None = None
    centre: tuple[float, float] | None = None
    branch: str = ""
    position: str = ""
    reason: str = ""
    weighted: np.ndarray | None = None
    mass: np.ndarray | None = None
    theoretical_rf: float = float("nan")
    profile: np.ndarray | None = None
    radii: np.ndarray | None = None
    replknet_map: np.ndarray | None = None


@dataclass(frozen=True)
class AblationInput:
    """True single-unit ablation of a sample of units, to validate gate gradients.

    Attributes:
        layers: Layer path of each ablated unit.
        units: ``[unit]`` index of each ablated unit in its layer.
        gradient: ``[unit]`` mean gate gradient ``|∂L/∂ξ|`` over the first ``images``.
        delta: ``[unit]`` mean ``|ΔL|`` when the unit's gate is 0, same images.
        images: Images the ablations ran on.
        gradient_images: ``[unit, image]`` the gate gradient per image (for the bootstrap
            interval of the rank correlation), or ``None``.
        delta_images: ``[unit, image]`` ``|ΔL|`` per image, or ``None``.
    """

    layers: tuple[str, ...] = ()
    units: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    gradient: np.ndarray = field(default_factory=lambda: np.zeros(0))
    delta: np.ndarray = field(default_factory=lambda: np.zeros(0))
    images: int = 0
    gradient_images: np.ndarray | None = None
    delta_images: np.ndarray | None = None


@dataclass(frozen=True)
class GateInput:
    """Gate gradients of one unit kind (heads or channels).

    Attributes:
        raw: Per layer path, ``[sample, unit]`` ``|∂L/∂ξ_u|`` per image.
        ablation: The ablation check, or ``None`` when none ran.
    """

    raw: Mapping[str, np.ndarray]
    ablation: AblationInput | None = None


@dataclass(frozen=True)
class PruningInput:
    """One pruning curve: units removed in increasing order of importance.

    Attributes:
        fractions: ``[step]`` fractions of the units removed (``0, 0.1, …, 1``).
        agreement: ``[step]`` top-1 agreement with the unpruned model.
        kl: ``[step]`` mean KL(full ‖ pruned).
        units: Units in the order (all units of the kind).
        images: Held-out images the curve was measured on (0: unknown).
        accuracy: ``[step]`` top-1 accuracy on the labelled held-out images, or ``None``.
        labelled: Held-out images with a label.
        importance_images: Images the order was estimated on.
    """

    fractions: np.ndarray
    agreement: np.ndarray
    kl: np.ndarray
    units: int = 0
    images: int = 0
    accuracy: np.ndarray | None = None
    labelled: int = 0
    importance_images: int = 0


@dataclass(frozen=True)
class AnalysisInputs:
    """Everything analyzers read: captured layers and the outputs of the model passes.

    Attributes:
        layers: Captured layers in model order.
        erf: Per ERF layer (model order), its map or the reason it was skipped.
        gates: Gate gradients by unit kind (``heads``, ``channels``).
        pruning: Pruning curves by unit kind (``heads``, ``channels``).
    """

    layers: Mapping[str, LayerInput]
    erf: Mapping[str, ErfInput] = field(default_factory=dict)
    gates: Mapping[str, GateInput] = field(default_factory=dict)
    pruning: Mapping[str, PruningInput] = field(default_factory=dict)


class Analyzer(Protocol):
    """Parameters in ``__init__``, one ``compute``; no I/O, no hooks (STYLE rule 8).

    ``result`` is the frozen dataclass ``compute`` returns; the run file stores its
    ``to_tree()`` and :meth:`inspector.store.Run.result` rebuilds it.
    """

    name: ClassVar[str]
    version: ClassVar[str]
    needs: ClassVar[frozenset[str]]
    result: ClassVar[type[AnalysisResult]]

    def params(self) -> dict[str, Any]: ...

    def compute(self, inputs: AnalysisInputs) -> AnalysisResult: ...


A = TypeVar("A", bound=type)


class Registry:
    """Analyzer classes by name."""

    def __init__(self) -> None:
        self._classes: dict[str, type] = {}

    def register(self, cls: A) -> A:
        name = cls.name  # type: ignore[attr-defined]
        if name in self._classes:
            raise ValueError(f"analyzer {name!r} is already registered")
        result = getattr(cls, "result", None)
        if result is None or result.analyzer != name:
            raise ValueError(
                f"analyzer {name!r} must name its result dataclass (``result``), whose "
                f"``analyzer`` is {name!r}"
            )
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

    def result_type(self, name: str) -> type[AnalysisResult]:
        """The result dataclass of analyzer ``name``."""
        return self[name].result  # type: ignore[attr-defined,no-any-return]

    def version(self, name: str) -> str:
        """The installed version of analyzer ``name``."""
        return str(self[name].version)  # type: ignore[attr-defined]

    def needs(self, names: list[str]) -> set[str]:
        return set().union(*(self._classes[n].needs for n in names))  # type: ignore[attr-defined]

    def requires(self, name: str) -> frozenset[str]:
        """Analyses whose results analyzer ``name`` builds on (its class's ``requires``)."""
        return frozenset(getattr(self[name], "requires", frozenset()))

    def closure(self, names: list[str] | tuple[str, ...]) -> tuple[str, ...]:
        """``names`` and every analysis they require, transitively, in registry order."""
        chosen = set(names)
        todo = list(names)
        while todo:
            for extra in self.requires(todo.pop()) - chosen:
                chosen.add(extra)
                todo.append(extra)
        return tuple(n for n in self._classes if n in chosen)


REGISTRY = Registry()
