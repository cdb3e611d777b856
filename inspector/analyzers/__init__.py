"""Analyzers: pure functions of captured arrays (no torch, no I/O), registered by name.

Each analyzer returns a frozen result dataclass (``DistanceResult``, ...): named fields
with dimension labels, ``params``, ``notes`` and ``version``, and ``to_tree()`` /
``from_tree()`` for the run file (``inspector.store.Run.result`` reads them back).
"""

from . import _attention, _gradients, _interaction, _redundancy  # noqa: F401  (register)
from ._attention import GLOBAL as GLOBAL
from ._attention import LOCAL as LOCAL
from ._attention import DistanceLayer as DistanceLayer
from ._attention import DistanceResult as DistanceResult
from ._attention import EntropyLayer as EntropyLayer
from ._attention import EntropyResult as EntropyResult
from ._erf import uniform_erf_distance as uniform_erf_distance
from ._gradients import AblationCheck as AblationCheck
from ._gradients import ErfLayer as ErfLayer
from ._gradients import ErfResult as ErfResult
from ._gradients import ErfSummary as ErfSummary
from ._gradients import ImportanceLayer as ImportanceLayer
from ._gradients import ImportanceResult as ImportanceResult
from ._gradients import PruningCurveResult as PruningCurveResult
from ._gradients import PruningKind as PruningKind
from ._importance import wilson_interval as wilson_interval
from ._interaction import EquivarianceLayer as EquivarianceLayer
from ._interaction import EquivarianceResult as EquivarianceResult
from ._interaction import InputDependenceLayer as InputDependenceLayer
from ._interaction import InputDependenceResult as InputDependenceResult
from ._intervals import IntervalSpec as IntervalSpec
from ._intervals import bootstrap as bootstrap
from ._intervals import bootstrap_mean as bootstrap_mean
from ._record import AnalysisResult as AnalysisResult
from ._record import Record as Record
from ._record import ResultSchemaError as ResultSchemaError
from ._redundancy import ChannelRedundancyLayer as ChannelRedundancyLayer
from ._redundancy import ChannelRedundancyResult as ChannelRedundancyResult
from ._redundancy import HeadRedundancyLayer as HeadRedundancyLayer
from ._redundancy import HeadRedundancyResult as HeadRedundancyResult
from ._redundancy import RedundancyStats as RedundancyStats
from ._redundancy import correlation_summary as correlation_summary
from ._registry import REGISTRY as REGISTRY
from ._registry import AblationInput as AblationInput
from ._registry import AnalysisInputs as AnalysisInputs
from ._registry import EquivarianceInput as EquivarianceInput
from ._registry import ErfInput as ErfInput
from ._registry import GateInput as GateInput
from ._registry import LayerInput as LayerInput
from ._registry import MeanMapInput as MeanMapInput
from ._registry import PruningInput as PruningInput
from ._schema_doc import results_schema_markdown as results_schema_markdown

__all__ = [
    "GLOBAL",
    "LOCAL",
    "REGISTRY",
    "AblationCheck",
    "AblationInput",
    "AnalysisInputs",
    "AnalysisResult",
    "ChannelRedundancyLayer",
    "ChannelRedundancyResult",
    "DistanceLayer",
    "DistanceResult",
    "EntropyLayer",
    "EntropyResult",
    "EquivarianceInput",
    "EquivarianceLayer",
    "EquivarianceResult",
    "ErfInput",
    "ErfLayer",
    "ErfResult",
    "ErfSummary",
    "GateInput",
    "HeadRedundancyLayer",
    "HeadRedundancyResult",
    "ImportanceLayer",
    "ImportanceResult",
    "InputDependenceLayer",
    "InputDependenceResult",
    "IntervalSpec",
    "LayerInput",
    "MeanMapInput",
    "PruningCurveResult",
    "PruningInput",
    "PruningKind",
    "Record",
    "RedundancyStats",
    "ResultSchemaError",
    "bootstrap",
    "bootstrap_mean",
    "correlation_summary",
    "results_schema_markdown",
    "uniform_erf_distance",
    "wilson_interval",
]
