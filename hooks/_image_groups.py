"""CKA sums per contiguous image group (METRICS.md §7: intervals by batch means), reduced
to their per-column-group pieces when a group's last image is in."""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Mapping

import numpy as np
import torch

from ._accumulate import GroupSums

__all__ = ["ImageGroups", "release_free_memory"]


def _blocks(
    count: int, s: torch.Tensor, c: torch.Tensor, r: torch.Tensor, norms: torch.Tensor, g: int
) -> dict[str, np.ndarray]:
    """Per column-group pair reductions of one set of sums: everything debiased CKA reads
    from ``sum``, ``cross`` and ``weighted`` (``g × g`` or ``g`` arrays, not ``p × p``)."""
    p = s.shape[0]
    size = p // g
    # s laid out block-diagonally ([p, g]: column h holds s_h in group h's rows), so that
    # s_hᵀ C_hg s_g is two thin matrix products instead of a four-index contraction.
    spread = torch.zeros(p, g, dtype=s.dtype)
    spread[torch.arange(p), torch.arange(p) // size] = s
    frob, trace, c_spread = _row_groups(c, spread, g)
    pieces = {
        "frob": frob,  # ‖C_hg‖²_F
        "trace": trace,  # tr C_hh
        "quad": spread.T @ c_spread,  # s_hᵀ C_hg s_g
        "sum_sq": torch.einsum("ha,ha->h", s.reshape(g, size), s.reshape(g, size)),  # ‖s_h‖²
        "sum_weighted": spread.T @ r,  # s_hᵀ r_·g
        "norms": norms,
    }
    # Copies (float64): a piece that is a view would keep the group's p × p sums alive.
    out = {
        key: value.detach().to(torch.float64, copy=True).numpy() for key, value in pieces.items()
    }
    return {"count": np.asarray(count, dtype=np.int64), **out}


def _row_groups(
    c: torch.Tensor, spread: torch.Tensor, g: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``‖C_hg‖²_F`` (``g × g``), ``tr C_hh`` (``g``) and ``C @ spread`` (``p × g``) in
    float64 from ``c`` (float32 or float64), a row group at a time: no ``p × p``
    temporary."""
    size = c.shape[0] // g
    frob = torch.empty(g, g, dtype=torch.float64)
    trace = torch.empty(g, dtype=torch.float64)
    product = torch.empty(c.shape[0], g, dtype=torch.float64)
    for h in range(g):
        band = slice(h * size, (h + 1) * size)
        rows = c[band].to(torch.float64)
        frob[h] = rows.square().reshape(size, g, size).sum((0, 2))
        trace[h] = rows[:, band].diagonal().sum()
        product[band] = rows @ spread
    return frob, trace, product


def _malloc_trim() -> Callable[[], None]:
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to do
        return lambda: None
    return lambda: trim(0)


release_free_memory = _malloc_trim()
"""Give freed heap memory back to the system (glibc's ``malloc_trim``; a no-op
elsewhere). Closing an image group frees several ``p × p`` arrays at once; glibc keeps
such blocks in its heap once its dynamic mmap threshold has grown past them, and the
next layer's arrays land around them, so without a trim a run's peak memory grew by a
third (deit_small: 2.2 → 3.4 GB)."""


_BLOCK_KEYS = ("count", "frob", "trace", "quad", "sum_sq", "sum_weighted", "norms")


class ImageGroups:
    """CKA sums per contiguous image group, for intervals by batch means (METRICS.md §7).

    Image ``i`` of an image set of ``images`` belongs to group ``i * G // images``
    (``G = min(image_groups, images)``): consecutive images, so a process only ever
    holds the groups its images are entering. A group receiving images keeps full
    :class:`GroupSums` (``p × p``); once all its images are in, it is reduced to its
    per-column-group pieces (:func:`_blocks`: ``g × g``), from which debiased CKA is
    exact for that group. Memory is one open group per process (two for a shard that
    starts inside a group), not G. Merging (checkpoints, resume, ranks) adds open
    groups of the same index and closes those now complete; closed groups are disjoint.

    Args:
        image_groups: G, groups requested (fewer when there are fewer images).
        images: Images in the whole image set (fixes every group's members).
        groups: Column groups (heads, or channel groups).
        size: Columns per group.
        summary: Called as ``summary(covariance, rows)`` on a group's covariance when it
            closes; its vector is kept with the group's pieces (``summary``), for
            intervals of statistics that need the whole covariance (|r| summaries). A
            group closed by a merge without it gets NaN.
    """

    def __init__(
        self,
        image_groups: int,
        images: int,
        groups: int,
        size: int,
        summary: Callable[[np.ndarray, int], np.ndarray] | None = None,
    ) -> None:
        if image_groups < 2 or images < 1:
            raise ValueError(
                f"image groups need >= 2 groups and >= 1 image, got "
                f"{image_groups} groups of {images} images"
            )
        self.count = min(image_groups, images)
        self.images, self.groups, self.size = images, groups, size
        self.summary = summary
        self.open: dict[int, tuple[GroupSums, int]] = {}
        self.closed: dict[int, dict[str, np.ndarray]] = {}

    def group_of(self, image: int) -> int:
        return image * self.count // self.images

    def members(self, group: int) -> int:
        """Images in ``group``."""
        first = -(-group * self.images // self.count)
        stop = -(-(group + 1) * self.images // self.count)
        return stop - first

    def spans(self, images: int, first: int) -> list[tuple[int, int, int]]:
        """``(group, offset, count)`` runs of the ``images`` images whose first has index
        ``first`` in the image set: images ``offset .. offset + count - 1`` of the batch
        belong to ``group``."""
        if images < 1 or first < 0 or first + images > self.images:
            raise ValueError(
                f"images {first}..{first + images - 1} are outside the image set of {self.images}"
            )
        out: list[tuple[int, int, int]] = []
        for index in range(images):
            group = self.group_of(first + index)
            if out and out[-1][0] == group:
                out[-1] = (group, out[-1][1], out[-1][2] + 1)
            else:
                out.append((group, index, 1))
        return out

    def update(self, rows: torch.Tensor, images: int, first: int) -> None:
        """Add ``rows`` (``[images * rows_per_image, p]``, image-major) of ``images``
        images whose first has index ``first`` in the image set (products of their own;
        :meth:`add` takes products shared with the run's sums)."""
        if images < 1 or rows.shape[0] % images:
            raise ValueError(f"{rows.shape[0]} rows do not split into {images} images")
        per_image = rows.shape[0] // images
        closed = False
        for group, offset, count in self.spans(images, first):
            chunk = rows[offset * per_image : (offset + count) * per_image]
            sums = self._open(group, None)
            products = sums.products(chunk)
            assert sums.shift is not None
            closed = self.add(group, count, chunk.shape[0], products, sums.shift) or closed
        if closed:
            release_free_memory()

    def sums_of(self, group: int) -> GroupSums:
        """``group``'s open sums (new ones, without a shift yet, for a group not open)."""
        return self._open(group, None)

    def _open(self, group: int, shift: torch.Tensor | None) -> GroupSums:
        """``group``'s open sums, about ``shift`` (re-expressed exactly when an open
        group, restored or merged, was summed about another)."""
        if group not in self.open:
            self.open[group] = (GroupSums(self.groups, self.size, shift, lean=True), 0)
        sums, seen = self.open[group]
        if shift is not None and sums.shift is not None and not torch.equal(sums.shift, shift):
            sums = sums.shifted(shift)
            self.open[group] = (sums, seen)
        elif sums.shift is None:
            sums.shift = shift
        return sums

    def add(
        self, group: int, images: int, n: int, products: torch.Tensor, shift: torch.Tensor
    ) -> bool:
        """Add ``images`` images' :meth:`GroupSums.products` (``n`` rows, taken about
        ``shift``) to ``group``, closing it when its last image is in (then ``True``:
        the caller gives the freed ``p × p`` sums back, :data:`release_free_memory`,
        once for all its layers)."""
        sums = self._open(group, shift)
        sums.add(n, products)
        self.open[group] = (sums, self.open[group][1] + images)
        return self._close_if_full(group)

    def _close_if_full(self, group: int) -> bool:
        sums, seen = self.open[group]
        if seen < self.members(group):
            return False
        del self.open[group]
        pieces = _blocks(sums.count, sums.sum, sums.cross, sums.weighted, sums.norms, self.groups)
        if self.summary is not None and sums.count > 1:
            # The group's sums are discarded now: its covariance is made in their place.
            cross = sums.cross  # float32 or float64: the |r| summary works in either
            total = sums.sum.to(cross.dtype)
            covariance = cross.addr_(total, total, alpha=-1.0 / sums.count)
            covariance.div_(sums.count - 1)
            pieces["summary"] = np.asarray(
                self.summary(covariance.numpy(), sums.count), dtype=np.float64
            )
        self.closed[group] = pieces
        return True

    def merge(self, other: ImageGroups) -> ImageGroups:
        if (other.count, other.images, other.groups, other.size) != (
            self.count,
            self.images,
            self.groups,
            self.size,
        ):
            raise ValueError("cannot merge image groups of different layouts")
        overlap = set(self.closed) & set(other.closed)
        if overlap:
            raise ValueError(f"image groups {sorted(overlap)} were closed twice")
        self.closed.update(other.closed)
        for group, (sums, seen) in other.open.items():
            if group in self.open:
                mine, before = self.open[group]
                self.open[group] = (mine.merge(sums), before + seen)
            else:
                self.open[group] = (sums.copy(), seen)  # closing works in place
            self._close_if_full(group)
        return self

    def state(self, copy: bool = True) -> dict[str, np.ndarray]:
        """Closed groups' pieces stacked (``closed``: their indices), open groups' full
        sums stacked (``open``, ``open_images``); either part absent when empty.

        Args:
            copy: ``False`` gives a single open group's sums as views of the live ones
                (valid until the next update: for writing a checkpoint at once without
                two ``p × p`` copies per layer); two open groups are stacked (copied).
        """
        out = {"layout": np.array([self.count, self.images, self.groups, self.size], np.int64)}
        if self.closed:
            order = sorted(self.closed)
            out["closed"] = np.array(order, dtype=np.int64)
            for key in _BLOCK_KEYS:
                out[key] = np.stack([np.asarray(self.closed[g][key]) for g in order])
            summaries = [self.closed[g].get("summary") for g in order]
            width = next((v.size for v in summaries if v is not None), None)
            if width is not None:
                out["summary"] = np.stack(
                    [np.full(width, np.nan) if v is None else v for v in summaries]
                )
        if self.open:
            order = sorted(self.open)
            out["open"] = np.array(order, dtype=np.int64)
            out["open_images"] = np.array([self.open[g][1] for g in order], dtype=np.int64)
            states = [self.open[g][0].state(copy=copy) for g in order]
            for key in _PART_KEYS:
                parts = [state[key] for state in states]
                out[f"open_{key}"] = parts[0][None] if len(parts) == 1 else np.stack(parts)
        return out

    @classmethod
    def from_state(
        cls,
        state: Mapping[str, np.ndarray],
        summary: Callable[[np.ndarray, int], np.ndarray] | None = None,
    ) -> ImageGroups:
        count, images, groups, size = (int(v) for v in np.asarray(state["layout"]))
        out = cls(max(count, 2), images, groups, size, summary)
        out.count = count
        keys = (*_BLOCK_KEYS, "summary") if "summary" in state else _BLOCK_KEYS
        for position, group in enumerate(np.asarray(state.get("closed", ()), dtype=np.int64)):
            out.closed[int(group)] = {k: np.asarray(state[k])[position] for k in keys}
        opened = np.asarray(state.get("open", ()), dtype=np.int64)
        for position, group in enumerate(opened):
            part = {k: np.asarray(state[f"open_{k}"])[position] for k in _PART_KEYS}
            seen = int(np.asarray(state["open_images"])[position])
            out.open[int(group)] = (GroupSums.from_state(part), seen)
        return out


_PART_KEYS = ("count", "sum", "cross", "weighted", "norms", "shift")
