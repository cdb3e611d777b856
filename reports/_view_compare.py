"""The view model of a comparison report: several runs on shared axes."""

from __future__ import annotations

from dataclasses import dataclass

from ._checks import as_tuple, set_field
from ._errors import ViewError
from ._view import (
    AttentionDistance,
    DynamicsLayer,
    ErfLayer,
    PruningCurve,
    RedundancyLayer,
    Table,
    WeightsInfo,
    check_sections,
)

__all__ = ["CompareReport", "CompareRun"]


@dataclass(frozen=True)
class CompareRun:
    """One run in a comparison: its label and the series drawn on the shared axes.

    Attributes:
        label: Legend label, e.g. ``"resnet50 (pretrained)"``; must be unique.
        model: Resolved model name.
        weights: Weights source and reason.
        attention_distance: As in :class:`RunReport` (empty for a CNN).
        erf: As in :class:`RunReport`.
        redundancy: As in :class:`RunReport`.
        pruning: As in :class:`RunReport`; ``max_removable`` feeds the bar chart.
        dynamics: As in :class:`RunReport`.
        images: Images of the capture pass (0: not stated).
        pass_images: How many images each gradient pass used, one sentence each.
    """

    label: str
    model: str
    weights: WeightsInfo
    attention_distance: tuple[AttentionDistance, ...] = ()
    erf: tuple[ErfLayer, ...] = ()
    redundancy: tuple[RedundancyLayer, ...] = ()
    pruning: tuple[PruningCurve, ...] = ()
    dynamics: tuple[DynamicsLayer, ...] = ()
    images: int = 0
    pass_images: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.weights, WeightsInfo):
            raise ViewError("CompareRun.weights must be a WeightsInfo")
        check_sections(self)


@dataclass(frozen=True)
class CompareReport:
    """Several runs on shared axes (depth as a fraction of the network).

    Attributes:
        runs: The runs, in legend order.
        created: Creation time of the comparison, ISO 8601 UTC.
        tool_version: inspector version.
        findings: Headline sentences, written by the caller.
        verdict: Heads vs channels like for like, per run and across runs, written from
            the numbers and their intervals.
        notes: Method notes.
        tables: Extra tables; a summary table (one row per run) is always shown.
        title: Page title; defaults to ``"inspector comparison — a vs b"``.
    """

    runs: tuple[CompareRun, ...]
    created: str = ""
    tool_version: str = ""
    findings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    tables: tuple[Table, ...] = ()
    title: str = ""
    verdict: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        runs = as_tuple(self, "runs", CompareRun)
        if not runs:
            raise ViewError("CompareReport needs at least one run")
        labels = [run.label for run in runs]
        if len(set(labels)) != len(labels):
            raise ViewError(f"CompareReport run labels must be unique, got {labels}")
        as_tuple(self, "findings", str)
        as_tuple(self, "verdict", str)
        as_tuple(self, "notes", str)
        as_tuple(self, "tables", Table)
        if not self.title:
            set_field(self, "title", "inspector comparison — " + " vs ".join(labels))
