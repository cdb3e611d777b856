"""Analyzers: pure functions of captured arrays (no torch, no I/O), registered by name."""

from . import _attention, _gradients, _redundancy  # noqa: F401  (register the analyzers)
from ._registry import REGISTRY as REGISTRY
from ._registry import AnalysisInputs as AnalysisInputs
from ._registry import LayerInput as LayerInput
from ._results import LayerResults as LayerResults

__all__ = ["REGISTRY", "AnalysisInputs", "LayerInput", "LayerResults"]
