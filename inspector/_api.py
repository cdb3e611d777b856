"""The public API: ``analyze`` a model into a run file, ``open_run`` to read one back."""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from torch import nn

import hooks

from . import __version__
from ._analysis import run_analyses
from ._capture_pass import layer_order, run_capture_pass
from ._distributed import gather_capture, world
from ._errors import InspectorError, RunFileError
from ._images import ImageSet, model_transform, open_images
from ._models import create_model, resolve_model_name
from ._options import AnalyzeOptions
from ._summaries import attention_summaries
from .store import Run, RunWriter, partial_path, read_run

__all__ = ["analyze", "open_run", "resolve_device"]

logger = logging.getLogger("inspector")

DEFAULT_OUT = Path("inspector-runs")


def open_run(path: str | Path) -> Run:
    """Read a complete run file (plain numpy arrays and dataclasses; no model needed)."""
    return read_run(path)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InspectorError(f"--device {name} asked for, but torch sees no CUDA device")
    return torch.device(name)


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"


def _output_path(out: str | Path | None, name: str) -> Path:
    out = DEFAULT_OUT if out is None else Path(out)
    if out.suffix in (".h5", ".hdf5"):
        path = out
    else:
        if out.exists() and not out.is_dir():
            raise InspectorError(f"--out {out} is a file; give a folder or a path ending in .h5")
        path = out / f"{_safe_name(name)}.h5"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InspectorError(f"cannot create output folder {path.parent}: {exc}") from exc
    return path


def _prepare_model(
    model: str | nn.Module, opts: AnalyzeOptions
) -> tuple[nn.Module, str, dict[str, Any]]:
    if isinstance(model, nn.Module):
        info = {
            "model": type(model).__name__,
            "model_requested": type(model).__name__,
            "resolution": "custom module",
            "weights_source": "given",
            "weights_reason": "a module passed to the API, with the weights it holds",
        }
        return model.eval(), type(model).__name__, info
    if not isinstance(model, str):
        raise InspectorError(
            f"model must be a timm name or a torch.nn.Module, got {type(model).__name__}"
        )
    resolution = resolve_model_name(model)
    if resolution.how == "alias":
        others = ", ".join(resolution.alternatives[:4]) or "none"
        logger.info("resolved %r to %s (alternatives: %s)", model, resolution.name, others)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(opts.seed)
        net, weights = create_model(resolution.name, opts.weights)
    info = {
        "model": resolution.name,
        "model_requested": model,
        "resolution": resolution.how,
        "alternatives": list(resolution.alternatives),
        "weights_source": weights.source,
        "weights_reason": weights.reason,
        "weights_path": weights.path or "",
    }
    return net.eval(), resolution.name, info


def _capture_options(net: nn.Module, opts: AnalyzeOptions) -> hooks.CaptureOptions:
    attention = list(hooks.find_attention(net))
    sites = hooks.find_channels(net)
    channels = [n for n, s in sites.items() if s.kind in ("conv", "mlp")]
    if opts.layers is not None:
        from hooks._discovery import match_names

        chosen = set(match_names([*attention, *sites], opts.layers, what="layer"))
        attention = [n for n in attention if n in chosen]
        channels = [n for n in sites if n in chosen]
    heads = [m for n, m in hooks.find_attention(net).items() if n in attention]
    group = 64
    for module in heads:
        proj = getattr(module, "proj", None) or getattr(module, "out_proj", None)
        if isinstance(proj, nn.Linear) and proj.in_features % module.num_heads == 0:
            group = proj.in_features // module.num_heads
            break
    return hooks.CaptureOptions(
        attention=attention or None,
        channels=channels or None,
        keep_maps=opts.keep_maps,
        positions=opts.positions,
        group_size=group,
        summaries=attention_summaries(),
        geometry=opts.geometry,
        exact_outputs=False,  # the capture pass discards outputs: attention computed once
    )


def _warn_nonfinite(cap: hooks.Capture) -> None:
    """Name the layers whose activations held NaN or inf (their metrics are left out)."""
    counts = {name: r.nonfinite for name, r in cap.attention.items() if r.nonfinite}
    counts |= {name: r.nonfinite for name, r in cap.channels.items() if r.nonfinite}
    if not counts:
        return
    names = layer_order(cap.model, list(counts))
    shown = ", ".join(f"{n} ({counts[n]} batch{'es' if counts[n] > 1 else ''})" for n in names[:8])
    more = f" and {len(names) - 8} more" if len(names) > 8 else ""
    logger.warning(
        "NaN or inf activations in %d layer(s): %s%s; their metrics are not reported "
        "(see the notes of each analysis)",
        len(names),
        shown,
        more,
    )


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
    device = resolve_device(opts.device)
    net, name, info = _prepare_model(model, opts)
    net = net.to(device)
    transform, data_config = model_transform(net)
    image_set: ImageSet = open_images(images, transform, opts.limit)
    for line in image_set.warnings:
        logger.warning(line)
    path = _output_path(out, name)
    capture_options = _capture_options(net, opts)
    fingerprint = json.dumps(
        {
            "model": info["model"],
            # what `--weights auto` resolved to: a resume must not mix random and
            # pretrained weights when the network came or went in between
            "weights_source": info["weights_source"],
            "images": image_set.source,
            "count": len(image_set),
            **opts.fingerprint(),
        },
        sort_keys=True,
        default=str,
    )
    partial = None
    if opts.resume and partial_path(path).exists():
        try:
            partial = read_run(partial_path(path), allow_incomplete=True)
        except RunFileError as exc:
            raise RunFileError(f"cannot resume: {exc}; delete the .partial file") from exc
        if not partial.sample_ids:  # stopped before its first checkpoint: nothing to keep
            logger.info("%s holds no finished batch; starting over", partial_path(path).name)
            partial = None
        else:
            logger.info(
                "resuming %s from %d images done", partial_path(path), len(partial.sample_ids)
            )
    elif opts.resume:
        logger.info("nothing to resume (no %s); starting a new run", partial_path(path).name)
    meta = {
        "tool": "inspector",
        "tool_version": __version__,
        "timm_version": timm.__version__,
        "torch_version": torch.__version__,
        **info,
        "input_size": list(data_config["input_size"]),
        "data_config": {k: v for k, v in data_config.items() if k != "crop_mode"},
        "images_source": image_set.source,
        "module_order": [n for n, _ in net.named_modules() if n],
        "device": str(device),
        "options": {k: v for k, v in opts.fingerprint().items()} | {"analyses": opts.analyses},
    }
    ranks = world()
    if ranks is not None and opts.resume:
        ranks.close()
        raise InspectorError(
            "--resume is not supported in multi-process runs; resume it in one process"
        )
    leader = ranks is None or ranks.leader
    writer = RunWriter(path, meta, fingerprint, resume=partial is not None) if leader else None
    try:
        started = time.perf_counter()
        captured = run_capture_pass(
            net,
            image_set,
            writer if ranks is None else None,
            capture_options,
            batch_size=opts.batch_size,
            device=device,
            partial=partial,
            checkpoint_seconds=opts.checkpoint_seconds,
            progress=opts.progress and leader,
            after_batch=opts._after_batch,
            shard=ranks.shard(len(image_set)) if ranks is not None else None,
            autocast=opts.autocast,
        )
        if ranks is not None:
            ids, labels = gather_capture(ranks, captured.capture, captured.ids, captured.labels)
            if not ranks.leader:
                ranks.barrier()  # rank 0 analyses and writes
                return read_run(path)
            captured.ids, captured.labels = ids, labels
            captured.changed()
            assert writer is not None
            writer.stage(  # no resume in multi-process runs: finish() writes it
                captured.state(),
                ids,
                np.asarray(labels),
                batches_done=-(-len(ids) // opts.batch_size),
                order=layer_order(net, [*captured.capture.attention, *captured.capture.channels]),
            )
        assert writer is not None
        if not captured.ids:
            raise InspectorError(f"no image of {image_set.source} could be read")
        _warn_nonfinite(captured.capture)
        timings = {"capture": captured.seconds}
        timings |= run_analyses(net, captured, image_set, opts, writer, device)
        timings["total"] = time.perf_counter() - started
        writer.set_attrs(
            timings=timings,
            images_skipped=len(image_set.skipped),
            images_done=len(captured.ids),
        )
        final = writer.finish()
        run = read_run(final)
        if opts.report:
            from .present import write_run_report

            write_run_report(run, final.with_suffix(".html"))
        if ranks is not None:
            ranks.barrier()
        return run
    except BaseException:
        if writer is not None:
            writer.close()
        raise
    finally:
        if ranks is not None:
            ranks.close()
