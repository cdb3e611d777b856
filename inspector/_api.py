"""The public API: ``analyze`` a model into a run file, ``open_run`` to read one back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ._errors import InspectorError
from ._open import open_run
from ._options import AnalyzeOptions
from .pipeline import execute, make_plan, resolve, world
from .store import Run, read_run

__all__ = ["analyze", "open_run"]


def analyze(
    model: str | nn.Module,
    images: Any = "builtin",
    *,
    out: str | Path | None = None,
    options: AnalyzeOptions | None = None,
    **kwargs: Any,
) -> Run:
    """Capture and analyse ``model`` on ``images``; write a run file (and a report).

    Args:
        model: A timm name or alias (``deit_small``) or any ``torch.nn.Module``.
        images: ``"builtin"``, a folder, an image file, a torch ``Dataset`` or ``DataLoader``.
        out: A folder (the file is ``<model>.h5`` in it) or a ``.h5`` path.
        options: An :class:`AnalyzeOptions`; or give its fields as keyword arguments.

    Returns:
        The run, read back from the file written.
    """
    if options is not None and kwargs:
        raise TypeError("give either options= or keyword fields, not both")
    opts = options or AnalyzeOptions(**kwargs)
    ranks = world()
    try:
        if ranks is not None and opts.resume:
            raise InspectorError(
                "--resume is not supported in multi-process runs; resume it in one process"
            )
        given = resolve(model, images, opts)
        plan = make_plan(
            given.model,
            given.info,
            given.images,
            given.data_config,
            out,
            opts,
            given.device,
            leader=ranks is None or ranks.leader,
        )
        path = execute(given.model, plan, ranks)
        if ranks is not None and not ranks.leader:
            ranks.barrier()  # rank 0 analyses, writes and reports
            return read_run(path)
        run = read_run(path)
        if opts.report:
            from .present import write_run_report

            write_run_report(run, path.with_suffix(".html"))
        if ranks is not None:
            ranks.barrier()
        return run
    finally:
        if ranks is not None:
            ranks.close()
