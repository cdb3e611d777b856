"""Token geometry of attention layers, and the extension point for new model families.

:func:`infer_geometry` dispatches an attention module to the rule of its model's timm
family (the module defining the model class) in the registry :data:`RULES`. A rule is a
function of a :class:`Context` that returns a :class:`TokenGeometry` or raises
:class:`Unknown` with the reason; it is registered with ``@RULES.register(...)`` together
with the kind of attention it reads and the tiny timm configurations that test it.

Rule authors import from here only: the registry (:data:`RULES`, :class:`TinyConfig`,
:class:`Context`, :class:`Unknown`) and the helpers for strides, grids and pooling
arithmetic (:func:`pair`, :func:`fstride`, :func:`grid_of`, :func:`grid_padded`,
:func:`reductions`, :func:`stage_stride`, :func:`info_stride`, :func:`block_stride`,
:func:`pooled`, :func:`conv_grid`, :func:`reduced_keys`, :func:`map_geometry`,
:func:`window_geometry`). See CONTRIBUTING.md, "Add a geometry rule".
"""

from ._helpers import FPair as FPair
from ._helpers import Pair as Pair
from ._helpers import block_stride as block_stride
from ._helpers import conv_grid as conv_grid
from ._helpers import fstride as fstride
from ._helpers import grid_of as grid_of
from ._helpers import grid_padded as grid_padded
from ._helpers import info_stride as info_stride
from ._helpers import map_geometry as map_geometry
from ._helpers import pair as pair
from ._helpers import pooled as pooled
from ._helpers import reduced_keys as reduced_keys
from ._helpers import reductions as reductions
from ._helpers import stage_stride as stage_stride
from ._helpers import window_geometry as window_geometry
from ._infer import infer_geometry as infer_geometry
from ._registry import ATTENTION_KINDS as ATTENTION_KINDS
from ._registry import RULES as RULES
from ._registry import VIT_LIKE as VIT_LIKE
from ._registry import AttentionKind as AttentionKind
from ._registry import Context as Context
from ._registry import DuplicateRuleError as DuplicateRuleError
from ._registry import Rule as Rule
from ._registry import RuleFunction as RuleFunction
from ._registry import RuleRegistry as RuleRegistry
from ._registry import TinyConfig as TinyConfig
from ._registry import Unknown as Unknown
from ._token import NOT_APPLICABLE as NOT_APPLICABLE
from ._token import GeometryKind as GeometryKind
from ._token import TokenGeometry as TokenGeometry

__all__ = [
    "ATTENTION_KINDS",
    "NOT_APPLICABLE",
    "RULES",
    "VIT_LIKE",
    "AttentionKind",
    "Context",
    "DuplicateRuleError",
    "FPair",
    "GeometryKind",
    "Pair",
    "Rule",
    "RuleFunction",
    "RuleRegistry",
    "TinyConfig",
    "TokenGeometry",
    "Unknown",
    "block_stride",
    "conv_grid",
    "fstride",
    "grid_of",
    "grid_padded",
    "infer_geometry",
    "info_stride",
    "map_geometry",
    "pair",
    "pooled",
    "reduced_keys",
    "reductions",
    "stage_stride",
    "window_geometry",
]
