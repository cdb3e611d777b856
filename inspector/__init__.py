"""inspector: how far CNN channels and transformer heads look, and how redundant they are."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._errors import AnalysisNotFoundError as AnalysisNotFoundError
from ._errors import ImageError as ImageError
from ._errors import InspectorError as InspectorError
from ._errors import ModelNotFoundError as ModelNotFoundError
from ._errors import RunFileError as RunFileError
from ._errors import WeightsError as WeightsError
from ._version import __version__ as __version__

if TYPE_CHECKING:
    from ._api import analyze as analyze
    from ._open import open_run as open_run
    from ._options import AnalyzeOptions as AnalyzeOptions
    from .store import Layer as Layer
    from .store import Run as Run

# The API needs torch and timm (seconds to import): it loads on first use, so that
# `import inspector` (and the CLI's `--version` and `info`) stay quick; `open_run` never
# imports them.
_LAZY = {
    "analyze": "._api",
    "open_run": "._open",
    "AnalyzeOptions": "._options",
    "Layer": ".store",
    "Run": ".store",
}

__all__ = [
    "AnalysisNotFoundError",
    "AnalyzeOptions",
    "ImageError",
    "InspectorError",
    "Layer",
    "ModelNotFoundError",
    "Run",
    "RunFileError",
    "WeightsError",
    "__version__",
    "analyze",
    "open_run",
]


def __getattr__(name: str) -> Any:
    """Import the public API on first access (PEP 562)."""
    if name in _LAZY:
        from importlib import import_module

        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
