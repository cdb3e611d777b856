"""Multi-process runs on PyTorch's own distributed runtime (``torchrun``).

Each rank captures a contiguous shard of the images; rank 0 gathers every rank's
:class:`hooks.CaptureState` (per-image summaries, first-K maps, accumulator states),
merges them in rank order, runs the analyses and writes the run file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.distributed as dist

from ._capture import CaptureInput

__all__ = ["World", "gather_capture", "world"]


@dataclass(frozen=True)
class World:
    """This process's place in a multi-process run."""

    rank: int
    size: int
    owns_group: bool

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def shard(self, count: int) -> tuple[int, int]:
        """Contiguous ``[start, stop)`` image positions of this rank."""
        per, extra = divmod(count, self.size)
        start = self.rank * per + min(self.rank, extra)
        return start, start + per + (1 if self.rank < extra else 0)

    def barrier(self) -> None:
        dist.barrier()

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def world() -> World | None:
    """The distributed world when launched by ``torchrun`` with more than one process."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return None
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
        owns = True
    return World(dist.get_rank(), dist.get_world_size(), owns)


def gather_capture(world: World, capture: CaptureInput, keep_maps: int) -> CaptureInput:
    """Every rank's capture merged in rank order (on rank 0; elsewhere this rank's own).

    One ``gather_object`` of each rank's :class:`hooks.CaptureState` (plain arrays),
    merged exactly by :meth:`hooks.CaptureState.merge`: Chan's update for moments,
    re-expression about one shift for CKA sums, summaries concatenated, maps kept for
    the first ``keep_maps`` images.
    """
    payload = capture if not world.leader else None
    gathered: list[Any] | None = [None] * world.size if world.leader else None
    dist.gather_object(payload, gathered, dst=0)
    if not world.leader:
        return capture
    assert gathered is not None
    state, ids, labels = capture.state, list(capture.ids), list(capture.labels)
    for other in gathered[1:]:
        state = state.merge(other.state, keep_maps=keep_maps)
        ids += other.ids
        labels += other.labels
    return replace(capture, state=state, ids=tuple(ids), labels=tuple(labels))
