"""Carry out a plan: capture (checkpointed, resumable, sharded), passes, analyzers, write."""

from __future__ import annotations

import gc
import json
import logging
import math
import re
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import hooks

from .._errors import InspectorError, Interrupted, ReportInterrupted, RunFileError
from ..store import Run, RunWriter, images_kept, partial_path, read_run
from . import _capture
from ._analyses import run_analyses
from ._capture import CaptureInput, defer_sigint, layer_order
from ._distributed import World, gather_capture
from ._plan import Plan
from ._progress import Progress

__all__ = ["execute", "resumable"]

logger = logging.getLogger("inspector")


def resumable(plan: Plan) -> Run | None:
    """The partial run ``--resume`` continues, or None (none, or it holds no batch)."""
    partial = partial_path(plan.output)
    if not plan.options.resume:
        kept = images_kept(partial) if partial.exists() else 0
        if kept:
            logger.warning(
                "starting over: %s held %d images of an interrupted run, now discarded "
                "(--resume would have continued it)",
                partial,
                kept,
            )
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
    changed = _images_changed(run, plan)
    if changed is not None:
        raise RunFileError(
            f"cannot resume {partial}: the images changed since it was started ({changed}); "
            "put them back, or run without --resume to start over on the images as they are"
        )
    logger.info("resuming %s from %d images done", partial, len(run.sample_ids))
    return run


def _images_changed(run: Run, plan: Plan) -> str | None:
    """What changed in the images since the partial ``run`` was started (one phrase),
    or ``None`` when they are the same (ids, sizes and content, per the fingerprint)."""
    stored = run.meta.get("fingerprint", {})  # decoded from JSON by the reader
    try:
        wanted = json.loads(plan.fingerprint)
    except ValueError:
        return None  # the writer's fingerprint check names the difference
    if not isinstance(stored, dict) or "images_sha256" not in stored:
        return None  # written before images were fingerprinted: the writer names it
    keys = ("images", "count", "images_sha256", "image_ids_sha256")
    if all(stored.get(key) == wanted.get(key) for key in keys):
        return None
    now = list(plan.images.ids)
    present = set(now)
    gone = [i for i in run.sample_ids if i not in present]
    if stored.get("images") != wanted.get("images"):
        return f"the image source changed ({stored.get('images')!r} -> {wanted.get('images')!r})"
    if gone:
        first = ", ".join(repr(i) for i in gone[:3])
        return (
            f"{len(gone)} of the {len(run.sample_ids)} images already processed are gone, "
            f"renamed or removed: {first}; {len(now)} images now, {stored.get('count')} before"
        )
    if stored.get("count") != wanted.get("count"):
        return f"{len(now)} images now, {stored.get('count')} before"
    if stored.get("image_ids_sha256", wanted.get("image_ids_sha256")) != wanted.get(
        "image_ids_sha256"
    ):
        return "other image names"
    return "same names and count, other sizes or content"


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


_STEP = {
    "receptive_field": "receptive field",
    "translation_equivariance": "equivariance",
    "importance": "importance",
    "pruning": "pruning",
}
"""The model passes, in the order they run, and their names in the progress display."""


_ATTENTION_HINT = re.compile(r"att|mhsa|shsa|shma|transformer|softmax", re.IGNORECASE)


def _may_attend(model: nn.Module) -> bool:
    """Whether any module is named like attention or carries a head count: only then is
    the extra probing forward worth its cost (a plain CNN gets none)."""
    return any(
        _ATTENTION_HINT.search(type(m).__name__)
        or _ATTENTION_HINT.search(n.rsplit(".", 1)[-1])
        or isinstance(getattr(m, "num_heads", None), int)
        or isinstance(getattr(m, "heads", None), int)
        for n, m in model.named_modules()
    )


def warn_missed_attention(model: nn.Module, plan: Plan) -> None:
    """Warn when no attention module was recognised but modules compute softmax over keys
    or call SDPA (attention discovery missed them: no distance, ERF branch or heads)."""
    if plan.capture.attention or not plan.leader or not _may_attend(model):
        return
    size = tuple(int(v) for v in plan.meta.get("input_size", (3, 224, 224)))
    try:
        found = hooks.softmax_modules(model, torch.zeros(1, *size, device=plan.device))
    except Exception:  # the capture pass will say what is wrong with the input
        return
    if found:
        names = list(found)
        more = f" and {len(names) - 4} more" if len(names) > 4 else ""
        logger.warning(
            "no attention module recognised, but %d module(s) compute attention (%s: %s%s): "
            "no attention metrics for them; they need a num_heads or heads attribute and "
            "query/key/value projections to be captured",
            len(names),
            found[names[0]],
            ", ".join(names[:4]),
            more,
        )


def _suggestion(tokens: int, size: tuple[int, int]) -> str | None:
    """``hooks.TokenGeometry(...)`` for ``tokens`` = prefix + a square patch grid that
    tiles the input, or None when no such reading exists."""
    for prefix in range(0, 9):
        side = math.isqrt(tokens - prefix) if tokens > prefix else 0
        if side and side * side == tokens - prefix and size[0] % side == 0 == size[1] % side:
            stride = (size[0] // side, size[1] // side)
            return (
                f'hooks.TokenGeometry(kind="global", prefix={prefix}, grid=({side}, {side}), '
                f"stride=({stride[0]}.0, {stride[1]}.0))"
            )
    return None


def warn_unknown_geometry(state: hooks.CaptureState, plan: Plan) -> None:
    """Name the attention layers without a token geometry (no distance, no ERF centre)
    and the exact ``geometry=`` that would give them one when the tokens read as prefix
    tokens + a square patch grid."""
    size = tuple(int(v) for v in plan.meta.get("input_size", (3, 224, 224)))[-2:]
    unknown: dict[str, tuple[str, int]] = {}
    for name, layer in state.layers.items():
        geometry = layer.attrs.get("geometry") or {}
        if layer.kind != "attention" or geometry.get("kind", "unknown") != "unknown":
            continue
        tokens = int(layer.maps.shape[-1]) if layer.maps is not None and layer.maps.ndim else 0
        glob = re.sub(r"(?<=\.)\d+(?=\.|$)", "*", name)
        unknown.setdefault(glob, (str(geometry.get("reason", "")), tokens))
    for glob, (reason, tokens) in unknown.items():
        suggestion = _suggestion(tokens, size) if tokens else None  # type: ignore[arg-type]
        how = (
            f"if its {tokens} tokens are {suggestion.split('prefix=')[1].split(',')[0]} prefix "
            f"token(s) and a patch grid, pass geometry={{{glob!r}: {suggestion}}}"
            if suggestion
            else f"pass geometry={{{glob!r}: hooks.TokenGeometry(...)}} describing its tokens"
        )
        logger.warning(
            "attention %s has no token geometry (%s): no distance; %s", glob, reason, how
        )


def execute(model: nn.Module, plan: Plan, ranks: World | None = None) -> Path:
    """Run ``plan`` on ``model`` and write the run file; returns its path.

    In a multi-process run every rank captures its shard, rank 0 merges, analyses and
    writes; the others wait for it. An interruption keeps the capture in the
    ``.partial`` file (see :func:`~inspector.pipeline._capture.run_capture_pass`).
    """
    warn_missed_attention(model, plan)
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
        warn_unknown_geometry(captured.state, plan)
        timings = {"capture": captured.seconds}
        passes, failed = run_analyses(model, plan, captured, writer, progress)
        timings |= passes
        timings["total"] = time.perf_counter() - started
        writer.set_attrs(
            timings=timings,
            failed_analyses=failed,
            images_skipped=len(plan.images.skipped),
            images_done=len(captured.ids),
        )
        _drop_stale_report(plan.output)
        with defer_sigint() as asked:
            path = writer.finish()
        # The capture's wide sums die here; hand their pages back before the caller
        # reads the file back, so that read does not stack on a heap glibc still holds.
        del captured
        gc.collect()
        hooks.release_free_memory()
        if asked():  # the run file is complete: nothing to resume, the report is left
            raise ReportInterrupted(path)
        return path
    except KeyboardInterrupt as exc:
        if writer is None:
            raise
        writer.close()
        if isinstance(exc, Interrupted):
            raise
        raise Interrupted(writer.partial, images_kept(writer.partial)) from exc
    except BaseException:
        if writer is not None:
            writer.close()
        raise


def _drop_stale_report(output: Path) -> None:
    """Remove the report beside ``output`` before a new run replaces it: it describes
    the earlier run (a new report is written after the run file, unless ``--no-report``)."""
    report = output.with_suffix(".html")
    if report.exists():
        logger.info("removing %s (the report of an earlier run at this path)", report)
        report.unlink()
