"""The public API: ``analyze`` a model into a run file, ``open_run`` to read one back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ._errors import InspectorError, Interrupted, ReportInterrupted
from ._open import open_run
from ._options import AnalyzeOptions
from .pipeline import execute, make_plan, resolve, world
from .store import Run, claim_output, read_run, refuse_existing

__all__ = ["analyze", "open_run"]


def _report(run: Run, path: Path) -> None:
    """Write the report of a finished run; a failure says that the run file is
    complete and how to write the report later."""
    from .present import write_run_report

    try:
        write_run_report(run, path.with_suffix(".html"))
    except InspectorError as exc:
        raise InspectorError(
            f"the run file {path} is complete, but its report was not written ({exc}); "
            f"fix that, then write it with `inspector report {path}`"
        ) from exc


def analyze(
    model: str | nn.Module,
    images: Any = "builtin",
    *,
    out: str | Path | None = None,
    options: AnalyzeOptions | None = None,
    name: str | None = None,
    **kwargs: Any,
) -> Run:
    """Capture and analyse ``model`` on ``images``; write a run file (and a report).

    Args:
        model: A timm name or alias (``deit_small``) or any ``torch.nn.Module``.
        images: ``"builtin"``, a folder, an image file, a torch ``Dataset`` or ``DataLoader``.
        out: A folder (the file is ``<model>.h5`` in it) or a ``.h5`` path. A file
            already there is replaced only with ``overwrite=True``.
        options: An :class:`AnalyzeOptions`; or give its fields as keyword arguments.
        name: The run's model name for a module (default: timm's ``pretrained_cfg``
            architecture when the module has one, else its class name).

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
        given = resolve(model, images, opts, name=name)
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
        if ranks is not None and not ranks.leader:
            refuse_existing(plan.output, overwrite=opts.overwrite)  # as rank 0 will
            path = execute(given.model, plan, ranks)
            ranks.barrier()  # rank 0 analyses, writes and reports
            return read_run(path)
        # The lock spans the resume, the run file and its report (docs/run-file.md).
        with claim_output(plan.output, overwrite=opts.overwrite):
            path = execute(given.model, plan, ranks)
            try:
                run = read_run(path)
                if opts.report:
                    _report(run, path)
            except KeyboardInterrupt as exc:  # the run file is complete: nothing to resume
                if isinstance(exc, Interrupted):
                    raise
                raise ReportInterrupted(path) from exc
        if ranks is not None:
            ranks.barrier()
        return run
    finally:
        if ranks is not None:
            ranks.close()
