"""Running an analysis: resolve → plan → execute.

:func:`resolve` turns what the user gave into a model on its device and a seeded image
set; :func:`make_plan` decides everything once (layers, gateable units, passes, images,
output, fingerprint); :func:`execute` runs the capture pass and the model passes, each
returning a typed input, then the analyzers, and writes the run file.
"""

from ._analyses import EquivariancePassResult as EquivariancePassResult
from ._analyses import ErfPassResult as ErfPassResult
from ._analyses import ImportancePassResult as ImportancePassResult
from ._analyses import PruningPassResult as PruningPassResult
from ._analyses import gate_units as gate_units
from ._analyses import layer_inputs as layer_inputs
from ._capture import CaptureInput as CaptureInput
from ._capture import defer_sigint as defer_sigint
from ._capture import layer_order as layer_order
from ._capture import stop_between_batches as stop_between_batches
from ._distributed import World as World
from ._distributed import world as world
from ._equivariance import equivariance_pass as equivariance_pass
from ._equivariance import output_grid as output_grid
from ._gradients import erf_layers as erf_layers
from ._gradients import erf_pass as erf_pass
from ._gradients import importance_pass as importance_pass
from ._gradients import pruning_pass as pruning_pass
from ._mean_maps import MeanMaps as MeanMaps
from ._plan import Plan as Plan
from ._plan import capture_options as capture_options
from ._plan import make_plan as make_plan
from ._plan import output_path as output_path
from ._progress import Progress as Progress
from ._resolve import Resolved as Resolved
from ._resolve import resolve as resolve
from ._resolve import resolve_device as resolve_device
from ._run import execute as execute

__all__ = [
    "CaptureInput",
    "EquivariancePassResult",
    "ErfPassResult",
    "ImportancePassResult",
    "MeanMaps",
    "Plan",
    "Progress",
    "PruningPassResult",
    "Resolved",
    "World",
    "capture_options",
    "defer_sigint",
    "equivariance_pass",
    "erf_layers",
    "erf_pass",
    "execute",
    "gate_units",
    "importance_pass",
    "layer_inputs",
    "layer_order",
    "make_plan",
    "output_grid",
    "output_path",
    "pruning_pass",
    "resolve",
    "resolve_device",
    "stop_between_batches",
    "world",
]
