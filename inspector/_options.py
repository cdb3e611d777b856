"""Options of a run, validated once (frozen dataclasses, STYLE rule 9)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ._errors import InspectorError

if TYPE_CHECKING:  # hooks imports torch: keep `inspector --version` and `info` quick
    from hooks import TokenGeometry

__all__ = ["ALL_ANALYSES", "AnalyzeOptions"]

ALL_ANALYSES = (
    "attention_distance",
    "attention_entropy",
    "receptive_field",
    "head_redundancy",
    "channel_redundancy",
    "importance",
    "pruning_curve",
)


def _fail(message: str) -> None:
    raise InspectorError(message)


@dataclass(frozen=True)
class AnalyzeOptions:
    """How ``inspector analyze`` runs.

    Attributes:
        weights: ``auto``, ``pretrained``, ``random`` or a weights file (timm names only).
        limit: Use at most this many images.
        batch_size: Images per forward pass.
        seed: Seeds random initialisation and a ``limit`` subset of a folder.
        device: ``auto``, ``cpu`` or ``cuda``.
        layers: Globs over layer paths restricting attention and channel layers.
        analyses: Analyzer names to run (default: all).
        keep_maps: Attention maps kept for the first this many images.
        positions: Tokens / positions per image sampled for the moment accumulators.
        erf_images: Images used by the gradient passes (ERF, importance, pruning).
        resume: Continue an interrupted run's ``.partial`` file.
        report: Write the HTML report next to the run file.
        checkpoint_seconds: Minimum time between checkpoints of the capture state.
        progress: Show progress bars.
        autocast: Run the capture pass under ``torch.autocast`` (bfloat16 on CPU, float16
            on CUDA); probabilities are still computed in float32 from the autocast
            ``q``/``k``. The gradient and ablation passes stay in float32.
        geometry: Token geometry by glob, for models whose geometry cannot be inferred.
        _after_batch: Private test seam: called with the number of capture batches done
            after each batch (and its checkpoint, if one was due); the resume tests raise
            from it to interrupt a run. Not part of the fingerprint, the repr or equality.
    """

    weights: str = "auto"
    limit: int | None = None
    batch_size: int = 16
    seed: int = 0
    device: str = "auto"
    layers: str | tuple[str, ...] | None = None
    analyses: tuple[str, ...] = ALL_ANALYSES
    keep_maps: int = 8
    positions: int = 64
    erf_images: int = 16
    resume: bool = False
    report: bool = True
    checkpoint_seconds: float = 30.0
    progress: bool = True
    autocast: bool = False
    geometry: Mapping[str, TokenGeometry] = field(default_factory=lambda: MappingProxyType({}))
    _after_batch: Callable[[int], None] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.limit is not None and (isinstance(self.limit, bool) or self.limit < 1):
            _fail(f"--limit {self.limit} is not a positive number of images; use --limit 1 or more")
        if self.batch_size < 1:
            _fail(f"--batch-size {self.batch_size} must be at least 1")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            _fail(f"--device {self.device!r} is not one of auto, cpu, cuda")
        unknown = [a for a in self.analyses if a not in ALL_ANALYSES]
        if unknown:
            _fail(
                f"unknown analysis {', '.join(map(repr, unknown))}; choose from "
                f"{', '.join(ALL_ANALYSES)}"
            )
        if self.keep_maps < 0 or self.positions < 1 or self.erf_images < 1:
            _fail("keep_maps must be >= 0, positions and erf_images >= 1")

    def replace(self, **changes: Any) -> AnalyzeOptions:
        return dataclasses.replace(self, **changes)

    def fingerprint(self) -> dict[str, Any]:
        """What must match for a resumed run to continue this one."""
        keep = (
            "weights", "limit", "batch_size", "seed", "layers", "keep_maps", "positions",
            "autocast",
        )  # fmt: skip
        return {k: getattr(self, k) for k in keep}


def parse_analyses(text: str | Sequence[str] | None) -> tuple[str, ...]:
    if text is None:
        return ALL_ANALYSES
    items = text.split(",") if isinstance(text, str) else list(text)
    return tuple(item.strip() for item in items if item.strip())
