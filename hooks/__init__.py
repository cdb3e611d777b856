"""Capture per-head attention, per-head outputs and channel activations from any model.

Everything is scoped: hooks live inside a context manager and are removed on exit,
also when the forward raises. Fused attention stays on; see ``hooks._taps``. Token
geometry is inferred by per-family rules, an extension point: see :mod:`hooks.geometry`.
"""

from ._accumulate import GroupSums as GroupSums
from ._accumulate import Moments as Moments
from ._capture import AttentionRecord as AttentionRecord
from ._capture import Capture as Capture
from ._capture import CaptureOptions as CaptureOptions
from ._capture import ChannelRecord as ChannelRecord
from ._capture import Summary as Summary
from ._capture import capture as capture
from ._discovery import ChannelSite as ChannelSite
from ._discovery import find_attention as find_attention
from ._discovery import find_blocks as find_blocks
from ._discovery import find_channels as find_channels
from ._discovery import gateable_heads as gateable_heads
from ._discovery import head_count as head_count
from ._discovery import head_width as head_width
from ._discovery import match_names as match_names
from ._discovery import output_projection as output_projection
from ._errors import CaptureError as CaptureError
from ._errors import HookError as HookError
from ._errors import SelectionError as SelectionError
from ._gates import gates as gates
from ._image_groups import release_free_memory as release_free_memory
from ._probe import Probe as Probe
from ._probe import first_tensor as first_tensor
from ._probe import probe as probe
from ._softmax import softmax_modules as softmax_modules
from ._state import CaptureState as CaptureState
from ._state import LayerState as LayerState
from ._taps import sdpa_probabilities as sdpa_probabilities
from .geometry import TokenGeometry as TokenGeometry
from .geometry import infer_geometry as infer_geometry

__all__ = [
    "AttentionRecord",
    "Capture",
    "CaptureError",
    "CaptureOptions",
    "CaptureState",
    "ChannelRecord",
    "ChannelSite",
    "GroupSums",
    "HookError",
    "LayerState",
    "Moments",
    "Probe",
    "SelectionError",
    "Summary",
    "TokenGeometry",
    "capture",
    "find_attention",
    "find_blocks",
    "find_channels",
    "first_tensor",
    "gateable_heads",
    "gates",
    "head_count",
    "head_width",
    "infer_geometry",
    "match_names",
    "output_projection",
    "probe",
    "release_free_memory",
    "sdpa_probabilities",
    "softmax_modules",
]
