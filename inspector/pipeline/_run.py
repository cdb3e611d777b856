"""Carry out a plan: capture (checkpointed, resumable, sharded), passes, analyzers, write."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
from torch import nn

import hooks

from .._errors import InspectorError, RunFileError
from ..store import Run, RunWriter, partial_path, read_run
from . import _capture
from ._analyses import run_analyses
from ._capture import CaptureInput, layer_order
from ._distributed import World, gather_capture
from ._plan import Plan
from ._progress import Progress

__all__ = ["execute", "resumable"]

logger = logging.getLogger("inspector")


def resumable(plan: Plan) -> Run | None:
    """The partial run ``--resume`` continues, or None (none, or it holds no batch)."""
    partial = partial_path(plan.output)
    if not plan.options.resume:
        return None
    if not partial.exists():
        logger.info("nothing to resume (no %s); starting a new run", partial.name)
        return None
    try:
        run = read_run(partial, allow_incomplete=True)
    except RunFileError as exc:
        raise RunFileError(f"cannot resume: {exc}; delete the .partial file") from exc
    if not run.sample_ids:  # stopped before its first checkpoint: nothing to keep
        logger.info("%s holds no finished batch; starting over", partial.name)
        return None
    logger.info("resuming %s from %d images done", partial, len(run.sample_ids))
    return run


def _warn_nonfinite(model: nn.Module, state: hooks.CaptureState) -> None:
    """Name the layers whose activations held NaN or inf (their metrics are left out)."""
    counts = {
        name: int(layer.attrs.get("nonfinite_batches", 0))
        for name, layer in state.layers.items()
        if layer.attrs.get("nonfinite_batches")
    }
    if not counts:
        return
    names = layer_order(model, list(counts))
    shown = ", ".join(f"{n} ({counts[n]} batch{'es' if counts[n] > 1 else ''})" for n in names[:8])
    more = f" and {len(names) - 8} more" if len(names) > 8 else ""
    logger.warning(
        "NaN or inf activations in %d layer(s): %s%s; their metrics are not reported "
        "(see the notes of each analysis)",
        len(names),
        shown,
        more,
    )


def _stage_merged(writer: RunWriter, model: nn.Module, plan: Plan, capture: CaptureInput) -> None:
    """Give the writer rank 0's merged capture (no resume in multi-process runs)."""
    writer.stage(
        capture.state.to_tree(),
        list(capture.ids),
        np.asarray(capture.labels),
        batches_done=-(-len(capture.ids) // plan.options.batch_size),
        order=layer_order(model, list(capture.state.layers)),
    )


_STEP = {"receptive_field": "receptive field", "importance": "importance", "pruning": "pruning"}
"""The model passes, in the order they run, and their names in the progress display."""


def execute(model: nn.Module, plan: Plan, ranks: World | None = None) -> Path:
    """Run ``plan`` on ``model`` and write the run file; returns its path.

    In a multi-process run every rank captures its shard, rank 0 merges, analyses and
    writes; the others wait for it. An interruption keeps the capture in the
    ``.partial`` file (see :func:`~inspector.pipeline._capture.run_capture_pass`).
    """
    partial = resumable(plan) if ranks is None else None
    writer = (
        RunWriter(plan.output, dict(plan.meta), plan.fingerprint, resume=partial is not None)
        if plan.leader
        else None
    )
    steps = ["capture", *(_STEP[p] for p in _STEP if p in plan.passes)]
    progress = Progress(steps, enabled=plan.options.progress and plan.leader)
    try:
        started = time.perf_counter()
        captured = _capture.run_capture_pass(
            model,
            plan,
            writer if ranks is None else None,
            partial=partial,
            shard=ranks.shard(len(plan.images)) if ranks is not None else None,
            progress=progress,
        )
        if ranks is not None:
            captured = gather_capture(ranks, captured, plan.options.keep_maps)
            if not ranks.leader:
                return plan.output
            assert writer is not None
            _stage_merged(writer, model, plan, captured)
        assert writer is not None
        if not captured.ids:
            raise InspectorError(f"no image of {plan.images.source} could be read")
        _warn_nonfinite(model, captured.state)
        timings = {"capture": captured.seconds}
        timings |= run_analyses(model, plan, captured, writer, progress)
        timings["total"] = time.perf_counter() - started
        writer.set_attrs(
            timings=timings,
            images_skipped=len(plan.images.skipped),
            images_done=len(captured.ids),
        )
        return writer.finish()
    except BaseException:
        if writer is not None:
            writer.close()
        raise
