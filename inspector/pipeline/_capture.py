"""The capture pass: stream images through the model under ``hooks.capture``, checkpoint
the streaming state (:class:`hooks.CaptureState`) into the run file, and restore it on
``--resume``."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

import hooks

from ..store import Run, RunWriter
from ._plan import Plan

__all__ = ["CaptureInput", "layer_order", "run_capture_pass", "stop_between_batches"]

logger = logging.getLogger("inspector")


def layer_order(model: nn.Module, names: list[str]) -> list[str]:
    """``names`` in ``named_modules()`` order (HDF5 sorts ``blocks.10`` before ``blocks.2``)."""
    rank = {name: i for i, (name, _) in enumerate(model.named_modules())}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))


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


@dataclass(frozen=True)
class CaptureInput:
    """What the capture pass gives the analyses.

    Attributes:
        state: Every captured layer's statistics as plain arrays.
        ids: Sample ids in the order they were processed.
        labels: Their labels (``-1`` when unknown).
        seconds: Wall time of the pass.
    """

    state: hooks.CaptureState
    ids: tuple[str, ...]
    labels: tuple[int, ...]
    seconds: float


def run_capture_pass(
    model: nn.Module,
    plan: Plan,
    writer: RunWriter | None,
    *,
    partial: Run | None = None,
    shard: tuple[int, int] | None = None,
) -> CaptureInput:
    """Run every image of the plan through ``model`` once, capturing; checkpoint as it goes.

    Ctrl-C (SIGINT) during the pass stops it between batches: the batch in flight
    finishes, a checkpoint is written and :class:`KeyboardInterrupt` is raised, so
    ``--resume`` continues from there (see :func:`stop_between_batches`).

    Args:
        writer: Where checkpoints go; ``None`` keeps everything in memory (the ranks of
            a multi-process run, whose state rank 0 gathers and writes).
        partial: A partial run to continue (its state is restored, its images skipped).
        shard: Image positions ``[start, stop)`` of this process; all when ``None``.
    """
    opts = plan.options
    images, device = plan.images, plan.device
    cap = hooks.capture(model, plan.capture)
    ids: list[str] = []
    labels: list[int] = []
    batches = 0
    if partial is not None and writer is not None:
        hooks.CaptureState.from_layers(partial.layers.values()).restore(cap)
        ids, labels = list(partial.sample_ids), [int(v) for v in partial.labels]
        batches = writer.batches_done
    first, stop = shard if shard is not None else (0, len(images))
    position = {image_id: i for i, image_id in enumerate(images.ids)}
    start = position[ids[-1]] + 1 if ids else first
    order = layer_order(model, [*cap.attention, *cap.channels])
    began = time.perf_counter()
    last = began

    def save(state: hooks.CaptureState) -> None:
        assert writer is not None
        writer.checkpoint(
            state.to_tree(), ids, np.asarray(labels), batches_done=batches, order=order
        )

    with (
        stop_between_batches() as interrupted,
        cap,
        torch.no_grad(),
        tqdm(
            total=stop - first,
            initial=start - first,
            desc="capture",
            unit="img",
            disable=not (opts.progress and plan.leader),
        ) as bar,
    ):
        for batch, batch_ids, batch_labels in images.batches(opts.batch_size, start):
            inside = sum(1 for i in batch_ids if position[i] < stop)
            if inside == 0:
                break
            if inside < len(batch_ids):  # the shard ends inside this batch
                batch, batch_ids, batch_labels = (
                    batch[:inside],
                    batch_ids[:inside],
                    batch_labels[:inside],
                )
            if opts.autocast:
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
            saved = writer is not None and now - last >= opts.checkpoint_seconds
            if saved:  # views of the live accumulators, written at once
                save(cap.state(copy=False))
                last = now
            if opts._after_batch is not None:
                opts._after_batch(batches)
            if interrupted():
                if writer is not None and not saved:
                    save(cap.state(copy=False))
                raise KeyboardInterrupt
    # The final state goes to disk before the gradient passes only when the last
    # checkpoint is older than ``checkpoint_seconds`` (or Ctrl-C came after the last
    # batch): a later crash loses at most that much capture work, as during the pass.
    # Otherwise finish() writes it: on a few images, a checkpoint of wide covariances
    # costs more than the pass itself.
    result = CaptureInput(cap.state(), tuple(ids), tuple(labels), time.perf_counter() - began)
    if writer is not None and batches > writer.batches_done:
        if interrupted() or time.perf_counter() - last >= opts.checkpoint_seconds:
            save(result.state)
        else:
            writer.stage(
                result.state.to_tree(), ids, np.asarray(labels), batches_done=batches, order=order
            )
    if interrupted():  # Ctrl-C after the last batch: the capture is saved, stop here
        raise KeyboardInterrupt
    return result
