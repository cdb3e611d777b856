"""Streaming accumulators merge exactly (Chan et al.) and agree with numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hooks import GroupSums, Moments


def test_two_merged_halves_equal_one_pass_and_numpy() -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(3.0, 2.0, size=(1000, 7)) @ rng.normal(size=(7, 7))
    whole = Moments(7)
    whole.update(torch.from_numpy(data))
    left, right = Moments(7), Moments(7)
    for chunk in np.array_split(data[:400], 3):
        left.update(torch.from_numpy(chunk))
    right.update(torch.from_numpy(data[400:]))
    merged = left.merge(right)
    assert merged.count == whole.count == 1000
    np.testing.assert_allclose(merged.mean.numpy(), data.mean(0), rtol=0, atol=1e-10)
    np.testing.assert_allclose(merged.covariance(), np.cov(data.T), rtol=0, atol=1e-10)
    np.testing.assert_allclose(whole.covariance(), np.cov(data.T), rtol=0, atol=1e-10)
    np.testing.assert_allclose(merged.covariance(), whole.covariance(), rtol=0, atol=1e-10)


def test_diagonal_moments_and_state_round_trip() -> None:
    rng = np.random.default_rng(1)
    data = rng.normal(size=(50, 4))
    diag = Moments(4, covariance=False)
    diag.update(torch.from_numpy(data[:20]))
    diag.update(torch.from_numpy(data[20:]))
    np.testing.assert_allclose(diag.covariance(), data.var(0, ddof=1), atol=1e-12)
    again = Moments.from_state(diag.state())
    np.testing.assert_allclose(again.covariance(), diag.covariance(), atol=0)
    with pytest.raises(ValueError, match=r"\[rows, 4\]"):
        diag.update(torch.zeros(3, 5))


def test_group_sums_merge_by_addition() -> None:
    rng = np.random.default_rng(2)
    data = torch.from_numpy(rng.normal(size=(64, 6)))
    zero = torch.zeros(6, dtype=torch.float64)
    one = GroupSums(3, 2, shift=zero)
    one.update(data)
    a, b = GroupSums(3, 2, shift=zero), GroupSums(3, 2, shift=zero)
    a.update(data[:10])
    b.update(data[10:])
    a.merge(b)
    for key in ("sum", "cross", "weighted", "norms"):
        np.testing.assert_allclose(getattr(a, key).numpy(), getattr(one, key).numpy(), atol=1e-10)
    sq = (data.reshape(64, 3, 2) ** 2).sum(-1)
    np.testing.assert_allclose(one.norms.numpy(), (sq.T @ sq).numpy(), atol=1e-10)
    assert GroupSums.from_state(one.state()).count == 64


def test_group_sums_default_shift_is_first_batch_mean() -> None:
    data = torch.randn(40, 4, dtype=torch.float64) + 100.0
    sums = GroupSums(2, 2)
    sums.update(data[:10])
    np.testing.assert_allclose(sums.shift.numpy(), data[:10].mean(0).numpy())
    with pytest.raises(ValueError, match="different shapes"):
        sums.merge(GroupSums(1, 4))


def test_group_sums_about_different_shifts_merge_exactly() -> None:
    rng = np.random.default_rng(3)
    data = torch.from_numpy(rng.normal(5.0, 2.0, size=(90, 6)))
    zero = torch.zeros(6, dtype=torch.float64)
    reference = GroupSums(3, 2, shift=zero)
    reference.update(data)
    a, b = GroupSums(3, 2), GroupSums(3, 2)  # each shifted by its own first batch's mean
    a.update(data[:40])
    b.update(data[40:])
    assert not torch.equal(a.shift, b.shift)
    merged = a.merge(b).shifted(zero)
    for key in ("sum", "cross", "weighted", "norms"):
        np.testing.assert_allclose(
            getattr(merged, key).numpy(), getattr(reference, key).numpy(), rtol=1e-9, atol=1e-8
        )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_moments_read_from_the_group_sums_equal_their_own_update(dtype: torch.dtype) -> None:
    # A layer with CKA sums reads its co-moment from them (Moments.of_sums: no second
    # p x p accumulator); the result is Moments.update's, in the rows' precision, also
    # after the sums were re-expressed about another shift.
    rng = np.random.default_rng(4)
    data = torch.from_numpy(rng.normal(50.0, 3.0, size=(120, 8))).to(dtype)
    alone, sums = Moments(8), GroupSums(2, 4)
    read = Moments.of_sums(sums)
    assert read.count == 0 and read.has_covariance
    for start in range(0, 120, 30):
        alone.update(data[start : start + 30])
        sums.update(data[start : start + 30])
        if start == 60:
            sums.reshift(torch.full((8,), 40.0, dtype=torch.float64))
    reference = np.cov(data.double().numpy().T)
    atol = (1e-12 if dtype == torch.float64 else 1e-6) * np.abs(reference).max()
    np.testing.assert_allclose(read.covariance(), reference, rtol=0, atol=atol)
    np.testing.assert_allclose(read.covariance(), alone.covariance(), rtol=0, atol=atol)
    np.testing.assert_allclose(read.mean.numpy(), data.double().mean(0).numpy(), rtol=1e-7)
    np.testing.assert_allclose(read.comoment.numpy(), read.comoment.numpy().T, rtol=0, atol=atol)
    assert read.count == alone.count == sums.count == 120
    state = read.state(copy=False)
    restored = Moments.from_state(state)  # plain arrays: an accumulator of its own
    np.testing.assert_array_equal(restored.comoment.numpy(), state["comoment"])
    restored.update(data[:4])
    assert restored.count == 124 and sums.count == 120
    with pytest.raises(TypeError, match="read from CKA sums"):
        read.update(data[:4])
    with pytest.raises(TypeError, match="read from CKA sums"):
        read.merge(alone)


def test_group_sums_of_float32_rows_equal_float64_within_float32_rounding() -> None:
    rng = np.random.default_rng(5)
    data = rng.normal(1e3, 1.0, size=(200, 6))  # offsets far above the spread
    single = GroupSums(3, 2)
    single.update(torch.from_numpy(data[:100]).float())
    assert single.shift is not None
    assert torch.equal(single.shift.float().double(), single.shift)  # float32-representable
    double = GroupSums(3, 2, shift=single.shift)
    double.update(torch.from_numpy(data[:100]).float().double())
    single.update(torch.from_numpy(data[100:]).float())
    double.update(torch.from_numpy(data[100:]).float().double())
    for key in ("sum", "cross", "weighted", "norms"):
        expected = getattr(double, key).numpy()
        scale = np.abs(expected).max()
        np.testing.assert_allclose(getattr(single, key).numpy(), expected, atol=1e-6 * scale)


@pytest.mark.parametrize("width", [100, 256, 1000, 1568])
def test_symmetric_gram_is_the_full_product_and_exactly_symmetric(width: int) -> None:
    """The blocked product the capture uses for wide layers (upper-triangle panels)."""
    from hooks._accumulate import symmetric_gram

    a = torch.randn(300, width, generator=torch.Generator().manual_seed(width))
    gram = symmetric_gram(a)
    assert torch.equal(gram, gram.T)
    exact = a.double().T @ a.double()
    torch.testing.assert_close(gram.double(), exact, rtol=0, atol=1e-3)


@pytest.mark.parametrize(("groups", "size"), [(3, 100), (24, 64), (5, 1)])
def test_wide_sums_fed_upper_blocks_equal_the_brute_force_sums(groups: int, size: int) -> None:
    """Wide layers add only the upper blocks of each product (the lower ones are mirrored
    when read): every sum, the moments sharing the product and an image group's sums
    equal float64 sums of the same rows, also when read between updates and re-expressed
    about a new shift (what the capture does on entering an image group)."""
    from hooks._image_groups import ImageGroups

    p = groups * size
    rng = np.random.default_rng(p)
    data = rng.normal(0.5, 1.0, size=(3, 90, p)).astype(np.float32)
    sums, images = GroupSums(groups, size), ImageGroups(2, 2, groups, size)
    moments = Moments.of_sums(sums)
    for index, batch in enumerate(torch.from_numpy(data)):
        if index == 1:
            sums.update(batch)
        else:  # one image each: the products are taken about the image group's shift
            own = images.sums_of(index // 2)
            products = own.products(batch)
            assert own.shift is not None
            sums.reshift(own.shift)
            sums.add(90, products)
            images.add(index // 2, 1, 90, products, own.shift)
        if p >= 256:  # mirrored blocks (a narrow layer's product is one GEMM)
            assert torch.equal(sums.cross, sums.cross.T)
    rows = data.reshape(-1, p).astype(np.float64)

    def expected(y: np.ndarray) -> dict[str, np.ndarray]:
        norms = (y.reshape(-1, groups, size) ** 2).sum(-1)
        return {
            "sum": y.sum(0),
            "cross": y.T @ y,
            "weighted": y.T @ norms,
            "norms": norms.T @ norms,
        }

    for key, value in expected(rows - sums.shift.numpy()).items():
        np.testing.assert_allclose(
            getattr(sums, key).numpy(), value, atol=2e-6 * np.abs(value).max()
        )
    centred = rows - rows.mean(0)
    comoment = centred.T @ centred
    np.testing.assert_allclose(
        moments.comoment.numpy(), comoment, atol=2e-6 * np.abs(comoment).max()
    )
    assert sorted(images.closed) == [0, 1]
    last = rows[180:] - rows[180:].mean(0).astype(np.float32).astype(np.float64)
    trace = np.einsum("haha->h", (last.T @ last).reshape(groups, size, groups, size))
    np.testing.assert_allclose(images.closed[1]["trace"], trace, rtol=1e-5)


def test_an_open_image_group_sums_in_float32_and_keeps_them_through_a_state() -> None:
    """An open image group's cross sums are float32 (its products are): the state and
    a restore keep them so (a resumed run adds as an uninterrupted one does); float64
    products, or a merge with float64 sums, widen them; the closed pieces equal float64
    sums of the same rows."""
    from hooks._image_groups import ImageGroups

    rng = np.random.default_rng(7)
    rows = torch.from_numpy(rng.normal(2.0, 1.0, size=(3, 40, 12)).astype(np.float32))
    groups = ImageGroups(2, 6, 3, 4)  # images 0-2 in group 0, 3-5 in group 1
    groups.update(rows[0], images=1, first=0)
    state = groups.state(copy=True)
    assert state["open_cross"].dtype == np.float32
    restored = ImageGroups.from_state(state)
    assert restored.open[0][0].cross.dtype == torch.float32
    for index in (1, 2):
        groups.update(rows[index], images=1, first=index)
        restored.update(rows[index], images=1, first=index)
    for key in ("frob", "trace", "quad", "norms"):
        np.testing.assert_array_equal(restored.closed[0][key], groups.closed[0][key])
    shift = rows[0].mean(0, dtype=torch.float64).float().double().numpy()
    y = rows.reshape(-1, 12).double().numpy() - shift  # the group's rows about its shift
    exact = np.square((y.T @ y).reshape(3, 4, 3, 4)).sum((1, 3))
    np.testing.assert_allclose(groups.closed[0]["frob"], exact, rtol=1e-5)
    wide = GroupSums(3, 4, lean=True)
    wide.update(rows[0].double())
    assert wide.cross.dtype == torch.float64
    lean, other = GroupSums(3, 4, lean=True), GroupSums(3, 4)
    lean.update(rows[0])
    other.update(rows[1])
    assert lean.cross.dtype == torch.float32
    lean.merge(other)
    assert lean.cross.dtype == torch.float64 and lean.count == 80
