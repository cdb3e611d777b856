"""Multi-process runs on PyTorch's own distributed runtime (``torchrun``).

Each rank captures a contiguous shard of the images; rank 0 gathers the per-image
summaries, first-K maps and accumulator states (merged in rank order: Chan's update for
moments, exact re-shifting for CKA sums), runs the analyses and writes the run file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

import hooks

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


def _record_state(cap: hooks.Capture) -> dict[str, Any]:
    attention = {
        name: {
            "geometry": record.geometry,
            "images": record.images,
            "nonfinite": record.nonfinite,
            "summaries": {k: torch.cat(v) for k, v in record.summaries.items()},
            "maps": torch.cat(record.maps) if record.maps else None,
            "moments": record.moments.state() if record.moments else None,
            "groups": record.groups.state() if record.groups else None,
        }
        for name, record in cap.attention.items()
    }
    channels = {
        name: {
            "channels": record.channels,
            "images": record.images,
            "nonfinite": record.nonfinite,
            "moments": record.moments.state() if record.moments else None,
            "groups": record.groups.state() if record.groups else None,
        }
        for name, record in cap.channels.items()
    }
    return {"attention": attention, "channels": channels}


def _merge_moments(current: Any, state: Any, kind: type) -> Any:
    if state is None:
        return current
    other = kind.from_state(state)
    return other if current is None else current.merge(other)


def gather_capture(
    world: World, cap: hooks.Capture, ids: list[str], labels: list[int]
) -> tuple[list[str], list[int]]:
    """Merge every rank's capture state into rank 0's ``cap`` (in rank order).

    Returns:
        On rank 0 all ids and labels in image order; elsewhere this rank's own.
    """
    payload = (_record_state(cap), ids, labels) if not world.leader else None
    gathered: list[Any] | None = [None] * world.size if world.leader else None
    dist.gather_object(payload, gathered, dst=0)
    if not world.leader:
        return ids, labels
    assert gathered is not None
    all_ids, all_labels = list(ids), list(labels)
    keep = cap.options.keep_maps
    for state, rank_ids, rank_labels in gathered[1:]:
        all_ids += rank_ids
        all_labels += rank_labels
        for name, other in state["attention"].items():
            record = cap.attention[name]
            if not other["geometry"].known and record.geometry.known:
                record.geometry = other["geometry"]
            record.nonfinite += other["nonfinite"]
            for key, values in other["summaries"].items():
                record.summaries.setdefault(key, []).append(values)
            room = keep - sum(len(m) for m in record.maps)
            if other["maps"] is not None and room > 0:
                record.maps.append(other["maps"][:room])
            record.images += other["images"]
            record.moments = _merge_moments(record.moments, other["moments"], hooks.Moments)
            record.groups = _merge_moments(record.groups, other["groups"], hooks.GroupSums)
        for name, other in state["channels"].items():
            channel = cap.channels[name]
            channel.channels = channel.channels or other["channels"]
            channel.images += other["images"]
            channel.nonfinite += other["nonfinite"]
            channel.moments = _merge_moments(channel.moments, other["moments"], hooks.Moments)
            channel.groups = _merge_moments(channel.groups, other["groups"], hooks.GroupSums)
    return all_ids, all_labels
