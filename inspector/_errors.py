"""The exception tree of :mod:`inspector`. The CLI prints any of these as one clean line."""

from __future__ import annotations

__all__ = [
    "AnalysisNotFoundError",
    "ImageError",
    "InspectorError",
    "ModelNotFoundError",
    "RunFileError",
    "WeightsError",
]


class InspectorError(Exception):
    """Root of every error inspector raises on purpose (bad input, missing files, ...)."""


class ModelNotFoundError(InspectorError, LookupError):
    """A model name that resolves to no timm architecture."""


class WeightsError(InspectorError):
    """Weights that cannot be found, downloaded, read or loaded into the model."""


class ImageError(InspectorError):
    """An image source that yields no usable image."""


class RunFileError(InspectorError):
    """A run file that is missing, corrupt, incomplete or of an unsupported schema."""


class AnalysisNotFoundError(RunFileError, LookupError):
    """A run file that holds no result of the analysis asked for."""
