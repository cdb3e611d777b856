"""Streaming accumulators that merge exactly across batches, shards and processes.

Means and co-moments use the parallel update of Chan, Golub and LeVeque (1979):
two summaries ``(n_a, mean_a, M_a)`` and ``(n_b, mean_b, M_b)`` merge into
``n = n_a + n_b``, ``mean = mean_a + d n_b / n`` and
``M = M_a + M_b + d dᵀ n_a n_b / n`` with ``d = mean_b - mean_a``. Batches are
reduced in their own dtype after centring (cheap, accurate) and merged in float64.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping

import numpy as np
import torch

__all__ = ["GroupSums", "Moments"]


def _array(x: torch.Tensor, copy: bool) -> np.ndarray:
    return x.numpy().copy() if copy else x.numpy()


def _edges(width: int, panels: int = 4) -> list[int]:
    """Panel edges of a ``width``-wide symmetric product (one panel below 256 columns)."""
    if width < 256:
        return [0, width]
    return [round(width * i / panels / 32) * 32 for i in range(panels)] + [width]


def _panels(width: int) -> list[tuple[slice, slice]]:
    """Row panels of a ``width``-wide symmetric product and the columns each computes
    (from its own start on)."""
    return [(slice(a, b), slice(a, width)) for a, b in itertools.pairwise(_edges(width))]


def symmetric_gram(a: torch.Tensor, mirror: bool = True, split: int | None = None) -> torch.Tensor:
    """``aᵀa`` for ``a`` ``[rows, width]``, computing only the upper triangle's blocks.

    Row panel ``i`` is multiplied with the columns from its own start on: 5/8 of the
    full product's work with four panels. With ``mirror`` the lower triangle is copied
    from the upper (exactly symmetric). Without, the lower blocks are uninitialised:
    the product is for :func:`_add_upper`, which reads only the blocks
    :func:`_panels` names. ``split``: the first ``split`` columns are panelled as a
    ``split``-wide product of their own (so that the ``[:split, :split]`` corner has the
    blocks of ``_panels(split)``) and the rest is one more panel.
    """
    width = a.shape[1]
    if split is None or split >= width:
        edges = _edges(width)
        if len(edges) == 2:
            return a.T @ a
    else:
        edges = [*_edges(split), width]
    out = torch.empty(width, width, dtype=a.dtype, device=a.device)
    for start, stop in itertools.pairwise(edges):
        rows, rest = slice(start, stop), slice(start, width)
        torch.mm(a[:, rows].T, a[:, rest], out=out[rows, rest])
        if mirror:
            _mirror_panel(out, rows)
    return out


def _mirror_panel(m: torch.Tensor, rows: slice) -> None:
    """Copy row panel ``rows`` (from its diagonal block on) onto its transposed place.
    The diagonal block is its own transpose's source: it is rebuilt from its upper
    triangle out of place (an overlapping in-place transpose copy is not defined)."""
    below = slice(rows.stop, m.shape[0])
    m[below, rows] = m[rows, below].T
    block = m[rows, rows]
    block.copy_(torch.triu(block) + torch.triu(block, 1).T)


def _add_upper(total: torch.Tensor, part: torch.Tensor) -> None:
    """``total += part`` on the blocks :func:`symmetric_gram` computes (half the work of
    a full add; ``total``'s other blocks are left stale until :func:`_mirror`)."""
    for rows, rest in _panels(total.shape[0]):
        total[rows, rest].add_(part[rows, rest])


def _mirror(m: torch.Tensor) -> None:
    """Copy the upper blocks of a symmetric matrix onto the lower ones, in place (the
    diagonal blocks too: exactly symmetric). A single panel is a full product: kept."""
    width = m.shape[0]
    if width < 256:
        return
    for rows, _ in _panels(width):
        _mirror_panel(m, rows)


class Moments:
    """Count, mean and co-moment (or per-feature second moment) of ``features`` columns.

    Args:
        features: Number of columns of every update.
        covariance: Keep the full ``features × features`` co-moment; otherwise only its diagonal.
    """

    def __init__(self, features: int, *, covariance: bool = True) -> None:
        if features < 1:
            raise ValueError(f"Moments needs at least one feature, got {features}")
        self.features = features
        self._count = 0
        self._mean = torch.zeros(features, dtype=torch.float64)
        shape = (features, features) if covariance else (features,)
        self._comoment = torch.zeros(shape, dtype=torch.float64)
        self.source: GroupSums | None = None

    @classmethod
    def of_sums(cls, sums: GroupSums) -> Moments:
        """The moments of the rows that ``sums`` holds, read from them on every access
        (``Σ y yᵀ − s sᵀ / n`` about the sums' shift, in float64): nothing of their own to
        update or store. A layer with CKA sums needs no second ``p × p`` accumulator."""
        out = cls(sums.groups * sums.size, covariance=False)  # its own arrays unused
        out.source = sums
        return out

    @property
    def count(self) -> int:
        return self._count if self.source is None else self.source.count

    @property
    def mean(self) -> torch.Tensor:
        sums = self.source
        if sums is None:
            return self._mean
        if sums.count == 0 or sums.shift is None:
            return torch.zeros(self.features, dtype=torch.float64)
        return sums.shift + sums.sum / sums.count

    @property
    def comoment(self) -> torch.Tensor:
        """The co-moment about the mean (its variances without covariance)."""
        sums = self.source
        if sums is None:
            return self._comoment
        out = sums.cross.clone()
        if sums.count:
            scaled = sums.sum / math.sqrt(sums.count)
            out.addr_(scaled, scaled, alpha=-1.0)
        return out

    @property
    def has_covariance(self) -> bool:
        return self.source is not None or self._comoment.dim() == 2

    def _own(self, action: str) -> None:
        if self.source is not None:
            raise TypeError(f"cannot {action} moments read from CKA sums: add rows to the sums")

    def update(self, x: torch.Tensor) -> None:
        """Add the rows of ``x`` (``[rows, features]``)."""
        self._own("update")
        x = x.detach()
        if x.dim() != 2 or x.shape[1] != self.features:
            raise ValueError(
                f"Moments.update expects [rows, {self.features}], got {tuple(x.shape)}"
            )
        n = x.shape[0]
        if n == 0:
            return
        if not x.is_floating_point() or x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        mean = x.mean(0)
        centred = x - mean
        m2 = symmetric_gram(centred) if self.has_covariance else (centred * centred).sum(0)
        self._merge(n, mean.to("cpu", torch.float64), m2.cpu())

    def merge(self, other: Moments) -> Moments:
        """Merge ``other`` into this accumulator (in place) and return it."""
        self._own("merge into")
        if other.features != self.features or other.has_covariance != self.has_covariance:
            raise ValueError("cannot merge Moments of different shapes")
        self._merge(other.count, other.mean, other.comoment)
        return self

    def _merge(self, n: int, mean: torch.Tensor, m2: torch.Tensor) -> None:
        """Merge a summary of ``n`` rows: float64 ``mean`` and co-moment ``m2`` (any float
        dtype, CPU) about the mean; the co-moment is updated in place (``m2`` added, then
        the rank-one correction)."""
        if n == 0:
            return
        if self._count == 0:
            self._count, self._mean = n, mean.clone()
            self._comoment = m2.to(torch.float64, copy=True)
            return
        total = self._count + n
        delta = mean - self._mean
        self._mean = self._mean + delta * (n / total)
        factor = self._count * n / total
        self._comoment.add_(m2)
        if self.has_covariance:
            self._comoment.addr_(delta, delta, alpha=factor)
        else:
            self._comoment.add_(delta * delta, alpha=factor)
        self._count = total

    def covariance(self, ddof: int = 1) -> np.ndarray:
        """Sample covariance (diagonal only when built without ``covariance``)."""
        if self.count <= ddof:
            raise ValueError(f"covariance needs more than {ddof} rows, have {self.count}")
        return (self.comoment / (self.count - ddof)).numpy()

    def state(self, copy: bool = True) -> dict[str, np.ndarray]:
        """Plain arrays that :meth:`from_state` turns back into an accumulator.

        Args:
            copy: ``False`` returns views of the live sums (no copy of a wide co-moment),
                valid until the next update: for writing them out at once. Moments read
                from CKA sums are computed afresh either way.
        """
        return {
            "count": np.asarray(self.count, dtype=np.int64),
            "mean": _array(self.mean, copy and self.source is None),
            "comoment": _array(self.comoment, copy and self.source is None),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, np.ndarray]) -> Moments:
        mean = np.asarray(state["mean"], dtype=np.float64)
        comoment = np.asarray(state["comoment"], dtype=np.float64)
        out = cls(mean.shape[0], covariance=comoment.ndim == 2)
        out._count = int(state["count"])
        out._mean = torch.from_numpy(mean.copy())
        out._comoment = torch.from_numpy(comoment.copy())
        return out


class GroupSums:
    """Raw sums that give the debiased (unbiased-HSIC) linear CKA between column groups.

    The columns are ``groups`` consecutive groups of ``size`` (a head's ``head_dim``, or
    channels grouped to head width). Kept: ``n``, ``Σ x``, ``Σ x xᵀ``,
    ``Σ_i x_i ‖x_i^g‖²`` (features × groups) and ``Σ_i ‖x_i^h‖² ‖x_i^g‖²``
    (groups × groups). Unbiased HSIC (Song et al. 2012) of any two groups is a closed
    form of these sums (see ``inspector.analyzers``), so the estimate is exact however
    the rows were batched, and sums merge by addition.

    Raw fourth-order sums cancel badly when a feature's mean is large next to its spread
    (ViT outlier dimensions), so rows are summed after subtracting a fixed ``shift``
    (by default the first batch's mean); the estimator is shift-invariant. Sums about
    another shift are re-expressed exactly about this one before they merge
    (:meth:`shifted`), so shards and ranks combine whatever their first batch was.
    """

    def __init__(
        self, groups: int, size: int, shift: torch.Tensor | None = None, *, lean: bool = False
    ) -> None:
        if groups < 1 or size < 1:
            raise ValueError(f"GroupSums needs groups, size >= 1, got {groups}, {size}")
        self.groups, self.size = groups, size
        p = groups * size
        self.count = 0
        self.sum = torch.zeros(p, dtype=torch.float64)
        # lean: Σ y yᵀ in float32 while float32 products come (an image group's sums,
        # see ImageGroups); float64 products, a merge or a re-shift make it float64.
        self._cross = torch.zeros(p, p, dtype=torch.float32 if lean else torch.float64)
        self._stale = False  # lower blocks behind the upper ones (see _add_upper)
        self.weighted = torch.zeros(p, groups, dtype=torch.float64)
        self.norms = torch.zeros(groups, groups, dtype=torch.float64)
        self.shift = None if shift is None else shift.detach().to("cpu", torch.float64)

    @property
    def cross(self) -> torch.Tensor:
        """``Σ y yᵀ`` of the shifted rows."""
        if self._stale:
            _mirror(self._cross)
            self._stale = False
        return self._cross

    @cross.setter
    def cross(self, value: torch.Tensor) -> None:
        self._cross, self._stale = value, False

    def update(self, x: torch.Tensor) -> None:
        """Add the rows of ``x`` (``[rows, groups * size]``).

        The batch is shifted and its products are taken in the rows' own precision
        (float32 for float32 and half-precision activations, float64 for float64), then
        added to the float64 sums. After the shift the rows are small next to the
        offsets that made float32 sums cancel, and one batch's float32 rounding sits
        orders of magnitude below the estimator's sampling noise; the ``[p, p]``
        product costs half of what it costs in float64. The rows' co-moment is read
        from these sums (:meth:`Moments.of_sums`).
        """
        p = self.groups * self.size
        if x.dim() != 2 or x.shape[1] != p:
            raise ValueError(f"GroupSums.update expects [rows, {p}], got {tuple(x.shape)}")
        if x.shape[0]:
            self.add(x.shape[0], self.products(x))

    def products(self, x: torch.Tensor) -> torch.Tensor:
        """One batch's products about this sums' shift (set to the batch's mean when
        unset), as :meth:`add` takes them: sums that share the shift (an image group's
        and the whole run's) add the same products, so one matrix product serves both.

        The rows extended by their per-group squared norms and a column of ones,
        ``[y, ‖y^g‖², 1]``, times themselves hold ``Σ y yᵀ``, ``Σ y ‖y^g‖²``, ``Σ y`` and
        ``Σ ‖y^h‖² ‖y^g‖²`` (zero columns pad the width to a multiple of 32, which BLAS
        blocks well).
        """
        x = x.detach()
        p = self.groups * self.size
        if x.dim() != 2 or x.shape[1] != p:
            raise ValueError(f"GroupSums.update expects [rows, {p}], got {tuple(x.shape)}")
        n = x.shape[0]
        work = torch.float64 if x.dtype == torch.float64 else torch.float32
        if self.shift is None:
            # The first batch's mean, rounded to the working precision (see _shift_into).
            self.shift = x.to(work).mean(0, dtype=torch.float64).to(work).to("cpu", torch.float64)
        g = self.groups
        width = -(-(p + g + 1) // 32) * 32
        extended = torch.empty(n, width, dtype=work, device=x.device)
        y = extended[:, :p]
        self._shift_into(x, y)
        torch.sum(y.square().view(n, g, self.size), -1, out=extended[:, p : p + g])
        extended[:, p + g] = 1
        extended[:, p + g + 1 :] = 0
        return symmetric_gram(extended, mirror=False, split=p).cpu()  # upper blocks only

    def add(self, n: int, products: torch.Tensor) -> None:
        """Add :meth:`products` of ``n`` rows taken about this sums' shift."""
        p, g = self.groups * self.size, self.groups
        if n == 0:
            return
        assert self.shift is not None, "products are taken about a shift"
        self.count += n
        # Upper blocks only (elements right of the diagonal: the sums and weighted
        # columns); this batch's products in its precision, sums in float64.
        self.sum.add_(products[:p, p + g])
        if products.dtype == torch.float64 and self._cross.dtype != torch.float64:
            self._widen()
        _add_upper(self._cross, products[:p, :p])
        self._stale = True
        self.weighted.add_(products[:p, p : p + g])
        self.norms.add_(products[p : p + g, p : p + g])  # the last panel: computed whole

    def _widen(self) -> None:
        """Keep ``Σ y yᵀ`` in float64 from now on."""
        self._cross = self._cross.to(torch.float64)

    @property
    def lean(self) -> bool:
        return self._cross.dtype != torch.float64

    def reshift(self, shift: torch.Tensor) -> None:
        """Re-express these sums about ``shift`` in place (exact algebra in float64, two
        passes over the ``[p, p]`` sums), so that products taken about ``shift`` add to
        them."""
        shift = shift.detach().to("cpu", torch.float64)
        if self.count:
            self._move(shift)
        self.shift = shift

    def _shift_into(self, x: torch.Tensor, out: torch.Tensor) -> None:
        """``out = x - shift`` in ``out``'s precision. A shift that precision represents
        exactly (the default) is subtracted in it: the difference of two float32 numbers,
        rounded once, is what float64 subtraction and rounding give."""
        assert self.shift is not None
        low = self.shift.to(out.dtype)
        if out.dtype == torch.float64 or torch.equal(low.to(torch.float64), self.shift):
            torch.sub(x, low.to(x.device), out=out)
        else:
            out.copy_(x.to(torch.float64) - self.shift.to(x.device))

    def merge(self, other: GroupSums) -> GroupSums:
        if (other.groups, other.size) != (self.groups, self.size):
            raise ValueError("cannot merge GroupSums of different shapes")
        if other.count == 0:
            return self
        if self.count == 0 and self.shift is None:
            self.shift = other.shift
        assert self.shift is not None and other.shift is not None
        if not torch.equal(other.shift, self.shift):
            other = other.shifted(self.shift)
        if other.cross.dtype == torch.float64 and self.lean:
            self._widen()
        self.count += other.count
        self.sum += other.sum
        self.cross += other.cross
        self.weighted += other.weighted
        self.norms += other.norms
        return self

    def copy(self) -> GroupSums:
        """An independent copy of these sums."""
        out = GroupSums(self.groups, self.size, self.shift, lean=self.lean)
        out.count = self.count
        out.sum, out.cross = self.sum.clone(), self.cross.clone()
        out.weighted, out.norms = self.weighted.clone(), self.norms.clone()
        return out

    def shifted(self, shift: torch.Tensor) -> GroupSums:
        """The same sums about ``shift`` instead of ``self.shift`` (a new object)."""
        out = self.copy()
        out.reshift(shift)
        return out

    def _move(self, shift: torch.Tensor) -> None:
        """Rows ``y`` about ``self.shift`` become ``y + c``, ``c = self.shift - shift``:
        update ``sum``, ``weighted``, ``norms`` and ``cross`` (in place) to sums of them."""
        assert self.shift is not None
        if self.lean:
            self._widen()
        c = self.shift - shift
        n, g, size = self.count, self.groups, self.size
        cg = c.reshape(g, size)
        s, cross, weighted = self.sum, self.cross, self.weighted
        # Per-group pieces: Σ‖y^g‖², Σ y^g·c^g, ‖c^g‖², and Σ y (y^g·c^g) = cross[:, g] c^g.
        sq = torch.diagonal(cross).reshape(g, size).sum(-1)
        sc = (s.reshape(g, size) * cg).sum(-1)
        cc = (cg * cg).sum(-1)
        # Σ_{i in g} cross[:, i] c_i as one thin product (no [p, p] temporary).
        spread_c = torch.zeros(g * size, g, dtype=c.dtype)
        spread_c[torch.arange(g * size), torch.arange(g * size) // size] = c
        cross_c = cross @ spread_c  # [p, g]
        # Σ‖y^h‖² (y^g·c^g) = c^g · Σ y^g ‖y^h‖² (rows of `weighted` in group g, column h).
        w_c = (weighted.reshape(g, size, g) * cg[:, :, None]).sum(1)  # [g (dot), h (norm)]
        # Σ (y^h·c^h)(y^g·c^g) = c^hᵀ cross[h, g] c^g = Σ_{i in h} c_i cross_c[i, g].
        dots = (cross_c.reshape(g, size, g) * cg[:, :, None]).sum(1)
        self.norms = (
            self.norms
            + 2 * w_c.T  # Σ‖y^h‖² (y^g·c^g): [h, g]
            + 2 * w_c  # Σ (y^h·c^h) ‖y^g‖²
            + torch.outer(sq, cc)
            + torch.outer(cc, sq)
            + 4 * dots
            + 2 * torch.outer(sc, cc)
            + 2 * torch.outer(cc, sc)
            + n * torch.outer(cc, cc)
        )
        self.weighted = (
            weighted
            + 2 * cross_c
            + torch.outer(s, cc)
            + torch.outer(c, sq)
            + 2 * torch.outer(c, sc)
            + n * torch.outer(c, cc)
        )
        # cross + s cᵀ + c sᵀ + n c cᵀ as one rank-three update, in place.
        left = torch.stack([s, c, n * c], 1)
        right = torch.stack([c, s, c], 0)
        cross.addmm_(left, right)
        self._stale = True  # the product rounds (i, j) and (j, i) apart: mirror on read
        self.sum = s + n * c

    def state(self, copy: bool = True) -> dict[str, np.ndarray]:
        """Plain arrays that :meth:`from_state` turns back into sums (``copy`` as for
        :meth:`Moments.state`)."""
        return {
            "count": np.asarray(self.count, dtype=np.int64),
            "sum": _array(self.sum, copy),
            "cross": _array(self.cross, copy),
            "weighted": _array(self.weighted, copy),
            "norms": _array(self.norms, copy),
            "shift": _array(torch.zeros_like(self.sum) if self.shift is None else self.shift, copy),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, np.ndarray]) -> GroupSums:
        norms = np.asarray(state["norms"], dtype=np.float64)
        summed = np.asarray(state["sum"], dtype=np.float64)
        groups = norms.shape[0]
        shift = state.get("shift")
        lean = np.asarray(state["cross"]).dtype == np.float32
        out = cls(
            groups,
            summed.shape[0] // groups,
            None if shift is None else torch.from_numpy(np.asarray(shift, np.float64).copy()),
            lean=lean,
        )
        out.count = int(state["count"])
        for key in ("sum", "cross", "weighted", "norms"):
            kind = np.float32 if key == "cross" and lean else np.float64
            setattr(out, key, torch.from_numpy(np.asarray(state[key], kind).copy()))
        return out
