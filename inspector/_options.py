"""Options of a run, grouped and validated once (frozen dataclasses, STYLE rule 9).

Three groups: :class:`CaptureSettings` (what the capture pass reads), :class:`PassSettings`
(which analyses run, on how many images the gradient passes run) and :class:`RunSettings`
(model weights, images, device, files, progress). :class:`AnalyzeOptions` holds one of
each and also takes their fields flat, as the command line gives them:
``AnalyzeOptions(limit=4, analyses=("attention_distance",))``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ._errors import InspectorError
from .analyzers import REGISTRY

if TYPE_CHECKING:  # hooks imports torch: keep `inspector --version` and `info` quick
    from hooks import TokenGeometry

__all__ = [
    "ALL_ANALYSES",
    "AnalyzeOptions",
    "CaptureSettings",
    "PassSettings",
    "RunSettings",
    "parse_analyses",
]

ALL_ANALYSES: tuple[str, ...] = tuple(REGISTRY)
"""Every registered analyzer, in the registry's (and the report's) order."""


def _fail(message: str) -> None:
    raise InspectorError(message)


@dataclass(frozen=True)
class CaptureSettings:
    """What the capture pass reads.

    Attributes:
        layers: Globs over layer paths restricting attention and channel layers.
        keep_maps: Attention maps kept for the first this many images.
        positions: Tokens / positions per image sampled for the moment accumulators.
        batch_size: Images per forward pass.
        autocast: Run the capture pass under ``torch.autocast`` (bfloat16 on CPU, float16
            on CUDA); probabilities are still computed in float32 from the autocast
            ``q``/``k``. The gradient and ablation passes stay in float32.
        geometry: Token geometry by glob, for models whose geometry cannot be inferred.
        input_size: Input side (or ``(height, width)``) in pixels images are resized and
            cropped to; ``None``: timm's data config of the model (224 for a module
            timm knows nothing about).
        mean: Per-channel normalisation mean (RGB); ``None``: the data config's.
        std: Per-channel normalisation standard deviation; ``None``: the data config's.
        interpolation: Resize interpolation (``bilinear``, ``bicubic``, ``nearest``);
            ``None``: the data config's.
    """

    layers: str | tuple[str, ...] | None = None
    keep_maps: int = 8
    positions: int = 64
    batch_size: int = 16
    autocast: bool = False
    geometry: Mapping[str, TokenGeometry] = field(default_factory=lambda: MappingProxyType({}))
    input_size: int | tuple[int, int] | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    interpolation: str | None = None

    def __post_init__(self) -> None:
        size = self.input_size
        if size is not None:
            sides = (size,) if isinstance(size, int) else tuple(size)
            if len(sides) not in (1, 2) or any(not isinstance(v, int) or v < 8 for v in sides):
                _fail(f"--input-size {size} must be one or two whole numbers of pixels >= 8")
        for label, value in (("mean", self.mean), ("std", self.std)):
            if value is not None and len(tuple(value)) != 3:
                _fail(f"--{label} {value} must be three numbers (R, G, B), e.g. 0.5,0.5,0.5")
        if self.std is not None and any(v <= 0 for v in self.std):
            _fail(f"--std {self.std} must be positive")
        if self.interpolation not in (None, "bilinear", "bicubic", "nearest"):
            _fail(
                f"--interpolation {self.interpolation!r} is not one of bilinear, bicubic, nearest"
            )
        if self.batch_size < 1:
            _fail(f"--batch-size {self.batch_size} must be at least 1")
        if self.keep_maps < 0 or self.positions < 1:
            _fail("keep_maps must be >= 0 and positions >= 1")


@dataclass(frozen=True)
class PassSettings:
    """Which analyses run and what the model passes after the capture use.

    Attributes:
        analyses: Analyzer names to run (default: all registered).
        erf_images: Images of the ERF pass (the first ones of the run's images; in the
            adaptive mode, the first batch).
        pruning_images: Images of the importance and pruning passes together: importance
            on the first half (rounded up), the pruning curve on the held-out rest (in
            the adaptive mode the held-out part grows).
        adaptive: Add images (batches of the sizes above) until the 95 % interval of the
            headline numbers is narrower than ``precision`` or ``max_images`` is reached:
            every block's ERF mean distance (half-width relative to it) and the pruning
            agreement at every step (half-width, absolute).
        precision: The adaptive mode's target half-width.
        max_images: The adaptive mode's most images per pass.
        pruning_threshold: Least top-1 agreement (the interval's lower bound) at which a
            fraction of units counts as removable.
        pruning_order: ``raw`` (increasing |dL/dgate|, default) or ``normalised`` (per
            layer L2, then min-max over the model).
        ablation_units: Units per kind whose gate gradient is checked against true
            ablation.
    """

    analyses: tuple[str, ...] = ALL_ANALYSES
    erf_images: int = 16
    pruning_images: int = 16
    adaptive: bool = False
    precision: float = 0.05
    max_images: int = 128
    pruning_threshold: float = 0.99
    pruning_order: str = "raw"
    ablation_units: int = 6

    def __post_init__(self) -> None:
        unknown = [a for a in self.analyses if a not in REGISTRY]
        if unknown:
            _fail(
                f"unknown analysis {', '.join(map(repr, unknown))}; choose from "
                f"{', '.join(ALL_ANALYSES)}"
            )
        if self.erf_images < 1:
            _fail(f"--erf-images {self.erf_images} must be at least 1")
        if self.pruning_images < 2:
            _fail(
                f"--pruning-images {self.pruning_images} must be at least 2 (importance on "
                "one part, the curve on the held-out rest)"
            )
        if not 0 < self.precision < 1:
            _fail(f"--precision {self.precision} must be in (0, 1), e.g. 0.05")
        if self.max_images < 1:
            _fail(f"--max-images {self.max_images} must be at least 1")
        if not 0 < self.pruning_threshold <= 1:
            _fail(f"--pruning-threshold {self.pruning_threshold} must be in (0, 1], e.g. 0.99")
        if self.pruning_order not in ("raw", "normalised"):
            _fail(f"--pruning-order {self.pruning_order!r} must be raw or normalised")
        if self.ablation_units < 0:
            _fail(f"--ablation-units {self.ablation_units} must be >= 0")


@dataclass(frozen=True)
class RunSettings:
    """Model weights, images, device, files and progress.

    Attributes:
        weights: ``auto``, ``pretrained``, ``random`` or a weights file (timm names only).
        limit: Use at most this many images.
        seed: Seeds random initialisation and chooses the ``limit`` subset of the images.
        device: ``auto``, ``cpu`` or ``cuda``.
        resume: Continue an interrupted run's ``.partial`` file.
        overwrite: Replace an existing file at the run file's path (otherwise a run
            refuses to start). Not part of the resume fingerprint.
        report: Write the HTML report next to the run file.
        checkpoint_seconds: Minimum time between checkpoints of the capture state.
        progress: Show progress bars.
        workers: DataLoader worker processes decoding a folder's images while the model
            runs; ``None`` (auto): ``min(4, CPUs - 1)`` for 64 images or more, else 0
            (starting workers costs more than decoding a few images).
        _after_batch: Private test seam: called with the number of capture batches done
            after each batch (and its checkpoint, if one was due); the resume tests raise
            from it to interrupt a run. Not part of the fingerprint, the repr or equality.
    """

    weights: str = "auto"
    limit: int | None = None
    seed: int = 0
    device: str = "auto"
    resume: bool = False
    overwrite: bool = False
    report: bool = True
    checkpoint_seconds: float = 30.0
    progress: bool = True
    workers: int | None = None
    _after_batch: Callable[[int], None] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.workers is not None and (isinstance(self.workers, bool) or self.workers < 0):
            _fail(f"--workers {self.workers} must be 0 (decode in this process) or more")
        if self.limit is not None and (isinstance(self.limit, bool) or self.limit < 1):
            _fail(f"--limit {self.limit} is not a positive number of images; use --limit 1 or more")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            _fail(f"--device {self.device!r} is not one of auto, cpu, cuda")


_GROUPS = {"capture": CaptureSettings, "passes": PassSettings, "run": RunSettings}
_FIELD_GROUP = {f.name: g for g, cls in _GROUPS.items() for f in dataclasses.fields(cls)}


@dataclass(frozen=True, init=False)
class AnalyzeOptions:
    """How ``inspector analyze`` runs: three groups of settings.

    Give the groups (``capture=CaptureSettings(...)``), or their fields flat
    (``AnalyzeOptions(limit=4, keep_maps=0)``); read them either way (``opts.run.limit``
    or ``opts.limit``).

    Attributes:
        capture: What the capture pass reads.
        passes: Which analyses run; images of the gradient passes.
        run: Weights, images, device, files, progress.
    """

    capture: CaptureSettings
    passes: PassSettings
    run: RunSettings

    def __init__(
        self,
        *,
        capture: CaptureSettings | None = None,
        passes: PassSettings | None = None,
        run: RunSettings | None = None,
        **fields: Any,
    ) -> None:
        given = {"capture": capture, "passes": passes, "run": run}
        changes: dict[str, dict[str, Any]] = {g: {} for g in _GROUPS}
        for name, value in fields.items():
            group = _FIELD_GROUP.get(name)
            if group is None:
                raise TypeError(
                    f"AnalyzeOptions got an unknown option {name!r}; options: "
                    f"{', '.join(sorted(n for n in _FIELD_GROUP if not n.startswith('_')))}"
                )
            changes[group][name] = value
        for group, cls in _GROUPS.items():
            base = given[group]
            value = (
                dataclasses.replace(base, **changes[group])
                if base is not None
                else cls(**changes[group])
            )
            object.__setattr__(self, group, value)

    def __getattr__(self, name: str) -> Any:
        group = _FIELD_GROUP.get(name)
        if group is None:
            raise AttributeError(f"AnalyzeOptions has no option {name!r}")
        return getattr(object.__getattribute__(self, group), name)

    def replace(self, **changes: Any) -> AnalyzeOptions:
        """A copy with some fields (flat names or whole groups) changed."""
        return AnalyzeOptions(capture=self.capture, passes=self.passes, run=self.run, **changes)

    def preprocessing(self) -> dict[str, Any]:
        """The data-config entries the user set (``input_size`` as ``(3, h, w)``)."""
        out: dict[str, Any] = {}
        size = self.input_size
        if size is not None:
            height, width = (size, size) if isinstance(size, int) else size
            out["input_size"] = (3, int(height), int(width))
        for key in ("mean", "std", "interpolation"):
            if getattr(self, key) is not None:
                value = getattr(self, key)
                out[key] = tuple(float(v) for v in value) if key != "interpolation" else value
        return out

    def fingerprint(self) -> dict[str, Any]:
        """What must match for a resumed run to continue this one."""
        keep = (
            "weights", "limit", "batch_size", "seed", "layers", "keep_maps", "positions",
            "autocast", "input_size", "mean", "std", "interpolation",
        )  # fmt: skip
        return {k: getattr(self, k) for k in keep}


def parse_analyses(text: str | Sequence[str] | None) -> tuple[str, ...]:
    if text is None:
        return ALL_ANALYSES
    items = text.split(",") if isinstance(text, str) else list(text)
    return tuple(item.strip() for item in items if item.strip())
