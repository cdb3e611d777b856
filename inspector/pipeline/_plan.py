"""The plan of a run: everything decided once, before the first forward.

From the options and the selected analyzers' declared needs: which layers are captured
(and how), which units can be gated, which model passes run after the capture and on
how many images, which images (the seeded subset), where the run file goes, and what a
resumed run must match.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

import hooks

from .._errors import InspectorError
from .._images import ImageSet
from .._options import AnalyzeOptions
from .._summaries import attention_summaries
from .._version import __version__
from ..analyzers import REGISTRY, correlation_summary
from ._mean_maps import MeanMaps

__all__ = ["DEFAULT_OUT", "PASSES_OF", "Plan", "capture_options", "make_plan", "output_path"]

logger = logging.getLogger("inspector")

DEFAULT_OUT = Path("inspector-runs")

_PASSES = {
    "erf": "receptive_field",
    "equivariance": "translation_equivariance",
    "gates": "importance",
    "pruning": "pruning",
}
"""Model passes after the capture, in the order they run, by the need that asks for them
(pruning orders units by their gate gradients: it needs the importance pass too)."""

CHECKPOINT_FORM = 2
"""The layout of a checkpoint's capture state (in the resume fingerprint)."""


def _passes(needs: set[str]) -> tuple[str, ...]:
    if "pruning" in needs:
        needs = needs | {"gates"}
    return tuple(step for need, step in _PASSES.items() if need in needs)


PASSES_OF: dict[str, tuple[str, ...]] = {name: _passes(REGISTRY.needs([name])) for name in REGISTRY}
"""The model passes each analysis is computed from (a failed pass fails these)."""


@dataclass(frozen=True)
class Plan:
    """What a run will do.

    Attributes:
        analyses: Analyzers to run, in registry order.
        passes: Model passes after the capture, in order (``receptive_field``,
            ``importance``, ``pruning``).
        capture: What the capture pass reads (layers, maps, positions, summaries).
        gateable: Units the gradient passes can gate: attention paths with their head
            counts under ``heads``; channel layers are those captured.
        images: The images, the ``--limit`` subset chosen with the seed.
        device: Where the model runs.
        output: The run file's path.
        fingerprint: What a resumed run must match (JSON).
        meta: Root attributes of the run file.
        options: The options the plan was made from.
        leader: Whether this process writes (rank 0, or the only process).
        mean_maps: The capture pass's streamed attention-map sums (input dependence),
            or None when no analyzer needs them.
    """

    analyses: tuple[str, ...]
    passes: tuple[str, ...]
    capture: hooks.CaptureOptions
    gateable: Mapping[str, int]
    images: ImageSet
    device: torch.device
    output: Path
    fingerprint: str
    meta: Mapping[str, Any]
    options: AnalyzeOptions
    leader: bool = True
    mean_maps: MeanMaps | None = None


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"


def output_path(out: str | Path | None, name: str) -> Path:
    """The run file for ``--out`` (a folder, or a path ending in ``.h5``); folders made."""
    out = DEFAULT_OUT if out is None else Path(out)
    if out.suffix.lower() in (".h5", ".hdf5"):  # RUN.H5 too: a file, never a folder
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


def capture_options(
    net: nn.Module,
    opts: AnalyzeOptions,
    images: int | None = None,
    mean_maps: MeanMaps | None = None,
) -> hooks.CaptureOptions:
    """What ``inspector analyze``'s capture pass reads of ``net`` under ``opts``
    (``images``: the image set's size, which fixes the image groups of the intervals;
    ``mean_maps``: the streamed attention-map sums of input dependence, in the same
    image groups)."""
    found = hooks.find_attention(net)
    attention = list(found)
    sites = hooks.find_channels(net)
    channels = [n for n, s in sites.items() if s.kind in ("conv", "mlp")]
    if opts.layers is not None:
        chosen = set(hooks.match_names([*attention, *sites], opts.layers, what="layer"))
        attention = [n for n in attention if n in chosen]
        channels = [n for n in sites if n in chosen]
    # Channel groups as wide as the first captured layer's heads (like for like).
    widths = (hooks.head_width(found[n]) for n in attention)
    group = next((w for w in widths if w is not None), 64)
    return hooks.CaptureOptions(
        attention=attention or None,
        channels=channels or None,
        keep_maps=opts.keep_maps,
        positions=opts.positions,
        seed=opts.seed,
        images=images,
        group_summary=partial(correlation_summary, overwrite=True),  # the group's own sums
        group_size=group,
        summaries=attention_summaries(),
        geometry=opts.geometry,
        exact_outputs=False,  # the capture pass discards outputs: attention computed once
        on_attention=mean_maps,
    )


def _meta(
    net: nn.Module,
    info: Mapping[str, Any],
    images: ImageSet,
    data_config: Mapping[str, Any],
    opts: AnalyzeOptions,
    device: torch.device,
) -> dict[str, Any]:
    """Root attributes of the run file."""
    return {
        "tool": "inspector",
        "tool_version": __version__,
        "timm_version": timm.__version__,
        "torch_version": torch.__version__,
        **info,
        "input_size": list(data_config["input_size"]),
        "data_config": {k: v for k, v in data_config.items() if k != "crop_mode"},
        "images_source": images.source,
        **({"images_labels": images.labelling} if images.labelling else {}),
        "module_order": [n for n, _ in net.named_modules() if n],
        "device": str(device),
        "options": dict(opts.fingerprint()) | {"analyses": list(opts.analyses)},
    }


def make_plan(
    net: nn.Module,
    info: Mapping[str, Any],
    images: ImageSet,
    data_config: Mapping[str, Any],
    out: str | Path | None,
    opts: AnalyzeOptions,
    device: torch.device,
    *,
    leader: bool = True,
) -> Plan:
    """Decide the run: layers, gateable units, passes, output and fingerprint.

    Args:
        net: The model, on ``device``.
        info: What resolving the model found (name, weights source and reason, ...).
        images: The images (already the seeded subset).
        data_config: timm's preprocessing of the model.
    """
    analyses = REGISTRY.closure(opts.analyses)
    added = [n for n in analyses if n not in opts.analyses]
    if added and leader:
        logger.info(
            "also running %s: %s",
            ", ".join(added),
            "; ".join(
                f"{n} needs {', '.join(sorted(REGISTRY.requires(n)))}"
                for n in opts.analyses
                if REGISTRY.requires(n) - set(opts.analyses)
            ),
        )
    passes = _passes(REGISTRY.needs(list(analyses)))
    mean_maps = MeanMaps() if "mean_maps" in REGISTRY.needs(list(analyses)) else None
    capture = capture_options(net, opts, len(images), mean_maps)
    chosen = set(capture.attention or ())
    gateable = {n: h for n, h in hooks.gateable_heads(net).items() if n in chosen}
    fingerprint = json.dumps(
        {
            "model": info["model"],
            # what `--weights auto` resolved to: a resume must not mix random and
            # pretrained weights when the network came or went in between
            "weights_source": info["weights_source"],
            "images": images.source,
            "count": len(images),
            # which images: names, sizes and content (a renamed or edited image changes it)
            "images_sha256": images.identity(),
            "image_ids_sha256": hashlib.sha256("\0".join(images.ids).encode()).hexdigest(),
            # what a checkpoint holds: 2 = no co-moment beside CKA sums, open image groups
            # in float32 (CONTRIBUTING.md 41); a build that reads another form refuses it
            "checkpoint_form": CHECKPOINT_FORM,
            **opts.fingerprint(),
        },
        sort_keys=True,
        default=str,
    )
    meta = _meta(net, info, images, data_config, opts, device)
    return Plan(
        analyses=analyses,
        passes=passes,
        capture=capture,
        gateable=gateable,
        images=images,
        device=device,
        output=output_path(out, str(info["model"])),
        fingerprint=fingerprint,
        meta=meta,
        options=opts,
        leader=leader,
        mean_maps=mean_maps,
    )
