"""The capture pass: stream images through the model under ``hooks.capture``, checkpoint
the streaming state into the run file, and restore it on ``--resume``."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

import hooks

from ._images import ImageSet
from .store import Run, RunWriter

__all__ = ["CapturePassResult", "layer_order", "restore", "run_capture_pass", "state_tree"]

logger = logging.getLogger("inspector")


def layer_order(model: nn.Module, names: list[str]) -> list[str]:
    """``names`` in ``named_modules()`` order (HDF5 sorts ``blocks.10`` before ``blocks.2``)."""
    rank = {name: i for i, (name, _) in enumerate(model.named_modules())}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))


def state_tree(cap: hooks.Capture, copy: bool = True) -> dict[str, dict[str, Any]]:
    """Plain arrays of everything the capture holds, per layer, for the run file.

    Args:
        copy: ``False`` gives views of the live accumulators instead of copies (a
            checkpoint written at once needs no second copy of every covariance).
    """
    out: dict[str, dict[str, Any]] = {}
    for name, record in cap.attention.items():
        out[name] = {
            "attrs": {
                "kind": "attention",
                "heads": record.heads,
                "geometry": record.geometry.to_dict(),
                "images": record.images,
                "nonfinite_batches": record.nonfinite,
            },
            "summaries": {k: record.summary(k) for k in record.summaries},
            "maps": record.maps_array() if record.maps else None,
            "moments": record.moments.state(copy) if record.moments else None,
            "groups": record.groups.state(copy) if record.groups else None,
        }
    for name, channel in cap.channels.items():
        site = channel.site
        out[name] = {
            "attrs": {
                "kind": "channel",
                "channels": channel.channels,
                "site": {"kind": site.kind, "point": site.point, "channel_axis": site.channel_axis},
                "images": channel.images,
                "nonfinite_batches": channel.nonfinite,
            },
            "moments": channel.moments.state(copy) if channel.moments else None,
            "groups": channel.groups.state(copy) if channel.groups else None,
        }
    return out


def restore(cap: hooks.Capture, partial: Run) -> None:
    """Seed ``cap``'s records with the state a partial run file checkpointed."""
    for name, layer in partial.layers.items():
        if layer.kind == "attention" and name in cap.attention:
            record = cap.attention[name]
            record.geometry = hooks.TokenGeometry.from_dict(layer.attrs["geometry"])
            record.images = int(layer.attrs["images"])
            record.nonfinite = int(layer.attrs.get("nonfinite_batches", 0))
            record.summaries = {k: [torch.from_numpy(v)] for k, v in layer.summaries.items()}
            record.maps = [torch.from_numpy(layer.maps)] if layer.maps is not None else []
            if layer.moments is not None and layer.groups is not None:
                record.moments = hooks.Moments.from_state(layer.moments)
                record.groups = hooks.GroupSums.from_state(layer.groups)
        elif layer.kind == "channel" and name in cap.channels:
            channel = cap.channels[name]
            channel.channels = int(layer.attrs["channels"])
            channel.images = int(layer.attrs["images"])
            channel.nonfinite = int(layer.attrs.get("nonfinite_batches", 0))
            if layer.moments is not None:
                channel.moments = hooks.Moments.from_state(layer.moments)
            if layer.groups is not None:
                channel.groups = hooks.GroupSums.from_state(layer.groups)


@contextmanager
def stop_between_batches() -> Iterator[Callable[[], bool]]:
    """Defer Ctrl-C (SIGINT) to the end of the current batch, for the duration of the block.

    Yields a function telling whether SIGINT arrived. The handler is installed only in
    the main thread (Python delivers signals there; elsewhere the block runs with the
    process's handler untouched) and the previous handler is put back on exit, also
    when the block raises. A second Ctrl-C raises :class:`KeyboardInterrupt` at once.
    """
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    asked: list[int] = []

    def handler(signum: int, frame: object) -> None:
        if asked:
            raise KeyboardInterrupt
        asked.append(signum)
        logger.warning(
            "interrupted: stopping after the current batch and saving a checkpoint "
            "(Ctrl-C again to stop at once)"
        )

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: bool(asked)
    finally:
        # ``None``: the previous handler was not installed from Python; the default
        # handler is the closest thing to restore.
        signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)


class CapturePassResult:
    """What the capture pass leaves for the analyses (the capture state, ids, timing)."""

    def __init__(
        self,
        capture: hooks.Capture,
        ids: list[str],
        labels: list[int],
        seconds: float,
        state: dict[str, dict[str, Any]] | None = None,
    ):
        self.capture = capture
        self.ids = ids
        self.labels = labels
        self.seconds = seconds
        self._state = state

    def state(self) -> dict[str, dict[str, Any]]:
        """:func:`state_tree` of the capture, taken once (copies of wide covariances
        are not free); call :meth:`changed` after merging other states into it."""
        if self._state is None:
            self._state = state_tree(self.capture)
        return self._state

    def changed(self) -> None:
        self._state = None


def run_capture_pass(
    model: nn.Module,
    images: ImageSet,
    writer: RunWriter | None,
    options: hooks.CaptureOptions,
    *,
    batch_size: int,
    device: torch.device,
    partial: Run | None = None,
    checkpoint_seconds: float = 30.0,
    progress: bool = True,
    after_batch: Callable[[int], None] | None = None,
    shard: tuple[int, int] | None = None,
    autocast: bool = False,
) -> CapturePassResult:
    """Run every image through ``model`` once, capturing; checkpoint as it goes.

    Ctrl-C (SIGINT) during the pass stops it between batches: the batch in flight
    finishes, a checkpoint is written and :class:`KeyboardInterrupt` is raised, so
    ``--resume`` continues from there (see :func:`stop_between_batches`).

    Args:
        writer: Where checkpoints go; ``None`` keeps everything in memory (the ranks of
            a multi-process run, whose state rank 0 gathers and writes).
        partial: A partial run to continue (its state is restored, its images skipped).
        after_batch: Called with the number of batches done (tests inject faults here).
        shard: Image positions ``[start, stop)`` of this process; all when ``None``.
        autocast: Run the forward under ``torch.autocast`` (bfloat16 on CPU, float16 on CUDA).
    """
    cap = hooks.capture(model, options)
    ids: list[str] = []
    labels: list[int] = []
    batches = 0
    if partial is not None and writer is not None:
        restore(cap, partial)
        ids, labels = list(partial.sample_ids), [int(v) for v in partial.labels]
        batches = writer.batches_done
    first, stop = shard if shard is not None else (0, len(images))
    position = {image_id: i for i, image_id in enumerate(images.ids)}
    start = position[ids[-1]] + 1 if ids else first
    order = layer_order(model, [*cap.attention, *cap.channels])
    began = time.perf_counter()
    last = began

    def save() -> None:
        assert writer is not None  # a checkpoint in the pass: views, written at once
        state = state_tree(cap, copy=False)
        writer.checkpoint(state, ids, np.asarray(labels), batches_done=batches, order=order)

    with (
        stop_between_batches() as interrupted,
        cap,
        torch.no_grad(),
        tqdm(
            total=stop - first,
            initial=start - first,
            desc="capture",
            unit="img",
            disable=not progress,
        ) as bar,
    ):
        for batch, batch_ids, batch_labels in images.batches(batch_size, start):
            inside = sum(1 for i in batch_ids if position[i] < stop)
            if inside == 0:
                break
            if inside < len(batch_ids):  # the shard ends inside this batch
                batch, batch_ids, batch_labels = (
                    batch[:inside],
                    batch_ids[:inside],
                    batch_labels[:inside],
                )
            if autocast:
                dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
                with torch.autocast(device.type, dtype=dtype):
                    model(batch.to(device))
            else:
                model(batch.to(device))
            ids.extend(batch_ids)
            labels.extend(int(v) for v in batch_labels)
            batches += 1
            bar.update(len(batch_ids))
            now = time.perf_counter()
            saved = writer is not None and now - last >= checkpoint_seconds
            if saved:
                save()
                last = now
            if after_batch is not None:
                after_batch(batches)
            if interrupted():
                if writer is not None and not saved:
                    save()
                raise KeyboardInterrupt
    # The final state goes to disk before the gradient passes only when the last
    # checkpoint is older than ``checkpoint_seconds`` (or Ctrl-C came after the last
    # batch): a later crash loses at most that much capture work, as during the pass.
    # Otherwise finish() writes it: on a few images, a checkpoint of wide covariances
    # costs more than the pass itself.
    result = CapturePassResult(cap, ids, labels, time.perf_counter() - began)
    if writer is not None and batches > writer.batches_done:
        final = result.state(), ids, np.asarray(labels)
        if interrupted() or time.perf_counter() - last >= checkpoint_seconds:
            writer.checkpoint(*final, batches_done=batches, order=order)
        else:
            writer.stage(*final, batches_done=batches, order=order)
    if interrupted():  # Ctrl-C after the last batch: the capture is saved, stop here
        raise KeyboardInterrupt
    return result
