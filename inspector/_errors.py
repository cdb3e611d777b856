"""The exception tree of :mod:`inspector`. The CLI prints any of these as one clean line."""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "AnalysisNotFoundError",
    "ImageError",
    "InspectorError",
    "Interrupted",
    "ModelNotFoundError",
    "ReportInterrupted",
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


class Interrupted(KeyboardInterrupt):
    """Ctrl-C stopped a run: what was kept, and where (the CLI says how to resume).

    Attributes:
        partial: The run's ``.partial`` file.
        images: Images it holds (0: stopped before the first checkpoint, nothing kept).
    """

    def __init__(self, partial: Path, images: int) -> None:
        super().__init__(partial, images)
        self.partial = partial
        self.images = images

    def __str__(self) -> str:
        if self.images:
            return (
                f"{self.images} images are kept in {self.partial}; run the same command "
                "with --resume to continue"
            )
        return "stopped before the first checkpoint, nothing was kept; run the command again"


class ReportInterrupted(Interrupted):
    """Ctrl-C once the run file was complete (while it was renamed into place or its
    report written): nothing to resume; ``inspector report`` writes the report.

    Attributes:
        run: The complete run file.
    """

    def __init__(self, run: Path) -> None:
        super().__init__(run, 0)
        self.run = run

    def __str__(self) -> str:
        return (
            f"the run file {self.run} is complete, its report was not written; write it "
            f"with `inspector report {self.run}`"
        )
