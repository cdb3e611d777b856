"""Resolve what a run is given: the device, the model (and its weights), the images."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .._errors import InspectorError
from .._images import ImageSet, model_class_names, model_transform, open_images
from .._models import create_model, resolve_model_name
from .._options import AnalyzeOptions

__all__ = ["Resolved", "resolve", "resolve_device"]

logger = logging.getLogger("inspector")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InspectorError(f"--device {name} asked for, but torch sees no CUDA device")
    return torch.device(name)


@dataclass(frozen=True)
class Resolved:
    """The model on its device, what resolving it found, and the images.

    Attributes:
        model: In eval mode, on ``device``.
        info: ``model`` (its name), ``model_requested``, ``resolution``, weights source,
            reason and path (root attributes of the run file).
        images: The images, the ``--limit`` subset chosen with the seed.
        data_config: timm's preprocessing of the model.
        device: Where the model runs.
    """

    model: nn.Module
    info: dict[str, Any]
    images: ImageSet
    data_config: dict[str, Any]
    device: torch.device


def module_name(model: nn.Module, name: str | None = None) -> str:
    """The name a module passed to the API runs under: ``name``, else timm's
    ``pretrained_cfg`` architecture (a timm model built by the caller, perhaps
    re-parameterized), else its class name."""
    if name:
        return name
    cfg = getattr(model, "pretrained_cfg", None)
    architecture = cfg.get("architecture") if isinstance(cfg, dict) else None
    return str(architecture or type(model).__name__)


def _model(
    model: str | nn.Module, opts: AnalyzeOptions, name: str | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    if isinstance(model, nn.Module):
        info = {
            "model": module_name(model, name),
            "model_requested": type(model).__name__,
            "resolution": "custom module",
            "weights_source": "given",
            "weights_reason": "a module passed to the API, with the weights it holds",
        }
        return model.eval(), info
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
        "reparameterized": weights.reparameterized,
    }
    return net.eval(), info


def image_workers(asked: int | None, images: int) -> int:
    """DataLoader workers for ``images`` images: as asked, or (``None``) ``min(4, CPUs -
    1)`` from 64 images on and none below (a worker's start costs more than decoding a
    few images)."""
    if asked is not None:
        return asked
    return min(4, max(0, (os.cpu_count() or 1) - 1)) if images >= 64 else 0


def resolve(
    model: str | nn.Module, images: Any, opts: AnalyzeOptions, *, name: str | None = None
) -> Resolved:
    """The device, the model with its weights, and the seeded image subset (``name``: the
    run's model name for a module, see :func:`module_name`)."""
    device = resolve_device(opts.device)
    net, info = _model(model, opts, name)
    net = net.to(device)
    transform, data_config = model_transform(net, opts.preprocessing())
    classes = getattr(net, "num_classes", None)
    image_set = open_images(  # warns once about skipped images
        images,
        transform,
        opts.limit,
        seed=opts.seed,
        num_classes=classes if isinstance(classes, int) and classes > 0 else None,
        class_names=model_class_names(net),
    )
    image_set.workers = image_workers(opts.workers, len(image_set))
    image_set.pin_memory = device.type == "cuda"
    if image_set.labelling.startswith("no labels"):
        logger.warning("%s: %s", image_set.source, image_set.labelling)
    elif image_set.labelling:
        logger.info("%s: %s", image_set.source, image_set.labelling)
    return Resolved(net, info, image_set, data_config, device)
