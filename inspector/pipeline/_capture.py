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
from typing import Any

import numpy as np
import torch
from torch import nn

import hooks

from .._errors import InspectorError
from ..store import Run, RunWriter
from ._plan import Plan
from ._progress import Progress, Silent

__all__ = [
    "CaptureInput",
    "defer_sigint",
    "layer_order",
    "run_capture_pass",
    "stop_between_batches",
]

logger = logging.getLogger("inspector")


def layer_order(model: nn.Module, names: list[str]) -> list[str]:
    """``names`` in ``named_modules()`` order (HDF5 sorts ``blocks.10`` before ``blocks.2``)."""
    rank = {name: i for i, (name, _) in enumerate(model.named_modules())}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))


def _may_handle_sigint() -> bool:
    """Whether a SIGINT handler may be installed: in the main thread (Python delivers
    signals there), and unless SIGINT is ignored (``SIG_IGN`` inherited from the parent,
    as ``nohup`` or a shell's background job sets it: Ctrl-C is not for this process)."""
    if threading.current_thread() is not threading.main_thread():
        return False
    return signal.getsignal(signal.SIGINT) is not signal.SIG_IGN


@contextmanager
def defer_sigint() -> Iterator[Callable[[], bool]]:
    """Hold Ctrl-C (SIGINT) back for the duration of the block; yields whether it came.

    For steps that must not stop half way inside library code, such as writing the
    finished run file: a :class:`KeyboardInterrupt` raised inside h5py can land in an
    object's destructor, where Python prints and drops it (the run went on and exited
    0). The caller raises it after the block. Main thread only; an ignored SIGINT stays
    ignored; the previous handler is put back.
    """
    if not _may_handle_sigint():
        yield lambda: False
        return
    asked: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: asked.append(signum))
    try:
        yield lambda: bool(asked)
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)


@contextmanager
def stop_between_batches() -> Iterator[Callable[[], bool]]:
    """Defer Ctrl-C (SIGINT) to the end of the current batch, for the duration of the block.

    Yields a function telling whether SIGINT arrived. The handler is installed only in
    the main thread (Python delivers signals there; elsewhere the block runs with the
    process's handler untouched) and the previous handler is put back on exit, also
    when the block raises. A second Ctrl-C raises :class:`KeyboardInterrupt` at once.
    """
    if not _may_handle_sigint():
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
    progress: Progress | None = None,
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
        progress: The run's progress display (none shown when ``None``).
    """
    opts = plan.options
    cap = hooks.capture(model, plan.capture)
    if plan.mean_maps is not None:
        plan.mean_maps.bind(cap)
    done = _Done(writer, layer_order(model, [*cap.attention, *cap.channels]))
    if partial is not None and writer is not None:
        cap.restore(hooks.CaptureState.from_layers(partial.layers.values()))
        done.resume(partial, writer.batches_done)
    first, stop = shard if shard is not None else (0, len(plan.images))
    start = plan.images.ids.index(done.ids[-1]) + 1 if done.ids else first
    began = time.perf_counter()
    with (
        stop_between_batches() as interrupted,
        cap,
        torch.no_grad(),
        (progress or Silent()).step("capture", stop - first, "images", start - first) as bar,
    ):
        position = {image_id: i for i, image_id in enumerate(plan.images.ids)}
        for batch, batch_ids, batch_labels in _shard(plan, start, stop):
            cap.seek(position[batch_ids[0]])  # draws follow the image, not the process
            try:
                _forward(model, batch, plan.device, opts.autocast)
            except (RuntimeError, ValueError, AssertionError) as exc:
                if done.ids or isinstance(exc, hooks.HookError):
                    raise  # the model took its input before: not a matter of size
                raise _rejected(plan, batch, exc) from exc
            done.add(batch_ids, batch_labels)
            bar.update(len(batch_ids))
            saved = done.due(opts.checkpoint_seconds)
            if saved:  # views of the live accumulators, written at once
                done.checkpoint(cap.state(copy=False, derived=False))
            if opts._after_batch is not None:
                opts._after_batch(done.batches)
            if interrupted():
                if writer is not None and not saved:
                    done.checkpoint(cap.state(copy=False, derived=False))
                raise KeyboardInterrupt
    # Views: the capture is over, and its accumulators stay alive with the bound mean
    # maps anyway (a copy would hold every wide sum twice through the later passes).
    result = CaptureInput(
        cap.state(copy=False), tuple(done.ids), tuple(done.labels), time.perf_counter() - began
    )
    done.close(result.state, opts.checkpoint_seconds, force=interrupted())
    if interrupted():  # Ctrl-C after the last batch: the capture is saved, stop here
        raise KeyboardInterrupt
    return result


def _shard(plan: Plan, start: int, stop: int) -> Iterator[tuple[torch.Tensor, list[str], Any]]:
    """The plan's batches from image position ``start``, cut at ``stop`` (a shard's end)."""
    position = {image_id: i for i, image_id in enumerate(plan.images.ids)}
    for batch, ids, labels in plan.images.batches(plan.options.batch_size, start):
        inside = sum(1 for i in ids if position[i] < stop)
        if inside == 0:
            return
        yield batch[:inside], ids[:inside], labels[:inside]


def _rejected(plan: Plan, batch: torch.Tensor, exc: BaseException) -> InspectorError:
    """A one-line error for a model that rejects the first batch: the size and
    normalisation used and the options that change them."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    height, width = batch.shape[-2:]
    return InspectorError(
        f"the model rejected its input of {height}×{width} px "
        f"({type(exc).__name__}: {first}); the size comes from "
        f"{'--input-size' if plan.options.input_size else 'the data config'}: set the size "
        "the model expects with --input-size (API: input_size=), and --mean/--std/"
        "--interpolation for its normalisation"
    )


def _forward(model: nn.Module, batch: torch.Tensor, device: torch.device, autocast: bool) -> None:
    if autocast:
        dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
        with torch.autocast(device.type, dtype=dtype):
            model(batch.to(device))
    else:
        model(batch.to(device))


class _Done:
    """The images a capture pass has done, and its checkpoints into the writer."""

    def __init__(self, writer: RunWriter | None, order: list[str]) -> None:
        self.writer = writer
        self.order = order
        self.ids: list[str] = []
        self.labels: list[int] = []
        self.batches = 0
        self.last = time.perf_counter()

    def resume(self, partial: Run, batches: int) -> None:
        self.ids = list(partial.sample_ids)
        self.labels = [int(v) for v in partial.labels]
        self.batches = batches

    def add(self, ids: list[str], labels: Any) -> None:
        self.ids.extend(ids)
        self.labels.extend(int(v) for v in labels)
        self.batches += 1

    def due(self, seconds: float) -> bool:
        return self.writer is not None and time.perf_counter() - self.last >= seconds

    def checkpoint(self, state: hooks.CaptureState) -> None:
        assert self.writer is not None
        self.writer.checkpoint(
            state.to_tree(),
            self.ids,
            np.asarray(self.labels),
            batches_done=self.batches,
            order=self.order,
        )
        self.last = time.perf_counter()

    def close(self, state: hooks.CaptureState, seconds: float, *, force: bool) -> None:
        """Hand the final state to the writer.

        It goes to disk before the gradient passes only when the last checkpoint is older
        than ``seconds`` (or Ctrl-C came after the last batch): a later crash loses at
        most that much capture work, as during the pass. Otherwise ``finish()`` writes
        it: on a few images, a checkpoint of wide covariances costs more than the pass.
        A last checkpoint that holds every batch lacks the co-moments read from CKA sums
        (``Capture.state(derived=False)``): the state is staged for ``finish()`` then too.
        """
        if self.writer is None:
            return
        if self.batches > self.writer.batches_done and (force or self.due(seconds)):
            self.checkpoint(state)
        else:
            labels = np.asarray(self.labels)
            self.writer.stage(
                state.to_tree(), self.ids, labels, batches_done=self.batches, order=self.order
            )
