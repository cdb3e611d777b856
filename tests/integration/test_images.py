"""Image sources, preprocessing and lazy batching (fast tier)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, TensorDataset

from inspector import ImageError, _images
from inspector.images import (
    IMAGE_EXTENSIONS,
    ImageSet,
    builtin_images_dir,
    model_transform,
    open_images,
)

BUILTIN = [
    "astronaut.jpg",
    "brick.jpg",
    "chelsea.jpg",
    "coffee.jpg",
    "grass.jpg",
    "gravel.jpg",
    "hubble_deep_field.jpg",
    "retina.jpg",
    "rocket.jpg",
]
Transform = Callable[[Image.Image], torch.Tensor]


@pytest.fixture(scope="module")
def vit() -> tuple[Transform, dict[str, Any]]:
    """test_vit's eval transform (160 px, mean = std = 0.5) and data config."""
    return model_transform(timm.create_model("test_vit"))


@pytest.fixture
def transform(vit: tuple[Transform, dict[str, Any]]) -> Transform:
    return vit[0]


@pytest.fixture
def mixed_folder(tmp_path: Path) -> Path:
    """Six files that pass the header check (one of them truncated), plus noise."""
    root = tmp_path / "photos"
    (root / "sub" / "nested").mkdir(parents=True)
    (root / ".cache").mkdir()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(root / "a.jpg")
    Image.new("L", (32, 32), 128).save(root / "gray.png")
    Image.new("RGBA", (20, 50), (0, 255, 0, 100)).save(root / "rgba.png")
    Image.new("P", (16, 16), 3).save(root / "pal.png")
    Image.new("RGB", (64, 64), (0, 0, 255)).save(root / "sub" / "nested" / "deep.JPG")
    Image.new("RGB", (64, 64)).save(root / ".cache" / "hidden.jpg")
    (root / "corrupt.jpg").write_bytes(b"this is not a jpeg at all" * 8)
    (root / "notes.txt").write_text("not an image")
    chelsea = (builtin_images_dir() / "chelsea.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(chelsea[: len(chelsea) // 2])
    return root


def _all(images: ImageSet, batch_size: int = 4, start: int = 0) -> list[Any]:
    return list(images.batches(batch_size, start=start))


# ---------------------------------------------------------------------- builtin


def test_builtin_set_has_nine_photos_with_file_name_ids(
    vit: tuple[Transform, dict[str, Any]],
) -> None:
    transform, config = vit
    assert (builtin_images_dir() / "LICENSES.md").is_file()
    images = open_images("builtin", transform)
    assert len(images) == 9
    assert images.ids == BUILTIN
    assert images.source == "builtin"
    assert images.skipped == [] and images.warnings == []
    batches = _all(images, batch_size=4)
    assert [b[0].shape[0] for b in batches] == [4, 4, 1]
    for tensors, ids, labels in batches:
        assert tuple(tensors.shape[1:]) == tuple(config["input_size"]) == (3, 160, 160)
        assert tensors.dtype == torch.float32
        assert labels.dtype == torch.int64 and labels.tolist() == [-1] * len(ids)
    assert [i for b in batches for i in b[1]] == BUILTIN


def test_transform_follows_the_model_data_config() -> None:
    model = timm.create_model("test_convnext")
    transform, config = model_transform(model)
    assert config == timm.data.resolve_model_data_config(model)
    (tensors, _, _), *_ = _all(open_images("builtin", transform, limit=1), 1)
    assert tuple(tensors.shape[1:]) == tuple(config["input_size"])


def test_single_image_file(transform: Transform) -> None:
    images = open_images(builtin_images_dir() / "chelsea.jpg", transform)
    assert images.ids == ["chelsea.jpg"]
    [(tensors, ids, _)] = _all(images)
    assert tensors.shape == (1, 3, 160, 160) and ids == ["chelsea.jpg"]


# ---------------------------------------------------------------------- folders


def test_folder_is_recursive_sorted_and_skips_bad_files(
    mixed_folder: Path, transform: Transform, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="inspector"):
        images = open_images(mixed_folder, transform)
    assert images.ids == [
        "a.jpg",
        "gray.png",
        "pal.png",
        "rgba.png",
        "sub/nested/deep.JPG",
        "truncated.jpg",
    ]
    assert images.skipped == [(str(mixed_folder / "corrupt.jpg"), images.skipped[0][1])]
    assert "unreadable" in images.skipped[0][1]
    assert len(images.warnings) == 1 and "skipped 1 image file" in images.warnings[0]
    assert any("corrupt.jpg" in r.getMessage() for r in caplog.records)

    with caplog.at_level(logging.WARNING, logger="inspector"):
        batches = _all(images, batch_size=4)
    produced = [i for b in batches for i in b[1]]
    assert produced == images.ids[:5]  # the truncated file fails only when decoded
    assert [p for p, _ in images.skipped] == [
        str(mixed_folder / "corrupt.jpg"),
        str(mixed_folder / "truncated.jpg"),
    ]
    assert "truncated" in images.skipped[1][1]
    assert any("truncated.jpg" in r.getMessage() for r in caplog.records)
    for tensors, _, _ in batches:  # grayscale, RGBA and palette all became RGB
        assert tensors.shape[1:] == (3, 160, 160)
    _all(images)  # a second pass does not record the same failure twice
    assert len(images.skipped) == 2


def test_rgb_conversion_keeps_colour(tmp_path: Path, transform: Transform) -> None:
    Image.new("L", (32, 32), 255).save(tmp_path / "white.png")
    Image.new("P", (32, 32), 0).save(tmp_path / "black.png")
    [(tensors, ids, _)] = _all(open_images(tmp_path, transform))
    assert ids == ["black.png", "white.png"]
    torch.testing.assert_close(tensors[0], torch.full_like(tensors[0], -1.0))
    torch.testing.assert_close(tensors[1], torch.ones_like(tensors[1]))


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    image = Image.new("RGB", (40, 20))
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    image.save(tmp_path / "phone.jpg", exif=exif)
    upright = _images._decode(tmp_path / "phone.jpg", max_pixels=10_000)
    assert (upright.size, upright.mode) == ((20, 40), "RGB")


def test_extensions_match_case_insensitively(tmp_path: Path, transform: Transform) -> None:
    for i, ext in enumerate(IMAGE_EXTENSIONS):
        Image.new("RGB", (8, 8)).save(tmp_path / f"{i}{ext.upper() if i % 2 else ext}")
    assert len(open_images(tmp_path, transform)) == len(IMAGE_EXTENSIONS)


def test_empty_folder_is_a_clear_error(tmp_path: Path, transform: Transform) -> None:
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(ImageError) as info:
        open_images(tmp_path, transform)
    message = str(info.value)
    assert str(tmp_path) in message and ".jpg" in message and ".webp" in message
    assert "1 other files ignored" in message and "\n" not in message


def test_folder_of_only_unreadable_images_is_a_clear_error(
    tmp_path: Path, transform: Transform
) -> None:
    (tmp_path / "bad.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(ImageError, match="no readable image \\(1 unreadable"):
        open_images(tmp_path, transform)


def test_missing_source_is_a_clear_error(tmp_path: Path, transform: Transform) -> None:
    with pytest.raises(ImageError, match="does not exist"):
        open_images(tmp_path / "nowhere", transform)
    with pytest.raises(ImageError, match="not supported"):
        open_images(42, transform)  # type: ignore[arg-type]


def test_oversized_images_are_skipped_and_pil_limit_untouched(
    tmp_path: Path, transform: Transform
) -> None:
    pil_limit = Image.MAX_IMAGE_PIXELS
    Image.new("RGB", (100, 100)).save(tmp_path / "big.png")
    Image.new("RGB", (10, 10)).save(tmp_path / "small.png")
    images = open_images(tmp_path, transform, max_pixels=5_000)
    assert images.ids == ["small.png"]
    assert "too large (100x100 = 10000 pixels > max_pixels=5000)" in images.skipped[0][1]
    assert pil_limit == Image.MAX_IMAGE_PIXELS


# ----------------------------------------------------------- limit, start, lazy


def test_limit_takes_the_first_images(transform: Transform) -> None:
    assert open_images("builtin", transform, limit=3).ids == BUILTIN[:3]
    assert open_images("builtin", transform, limit=100).ids == BUILTIN


@pytest.mark.parametrize("limit", [0, -2, 1.5, True])
def test_bad_limit_is_a_clear_error(transform: Transform, limit: Any) -> None:
    with pytest.raises(ImageError, match="limit="):
        open_images("builtin", transform, limit=limit)


def test_seeded_subset_is_deterministic_and_in_order(transform: Transform) -> None:
    first = open_images("builtin", transform, limit=4, seed=3).ids
    assert first == open_images("builtin", transform, limit=4, seed=3).ids
    assert first == sorted(first) and set(first) <= set(BUILTIN) and len(first) == 4
    subsets = {tuple(open_images("builtin", transform, limit=4, seed=s).ids) for s in range(6)}
    assert len(subsets) > 1


def test_start_offset_resumes_at_an_image_index(transform: Transform) -> None:
    images = open_images("builtin", transform)
    batches = _all(images, batch_size=2, start=5)
    assert [i for b in batches for i in b[1]] == BUILTIN[5:]
    assert [b[0].shape[0] for b in batches] == [2, 2]
    assert _all(images, start=9) == []
    with pytest.raises(ImageError, match="start=10"):
        _all(images, start=10)
    with pytest.raises(ImageError, match="batch_size=0"):
        _all(images, batch_size=0)


def test_images_are_decoded_lazily(monkeypatch: pytest.MonkeyPatch, transform: Transform) -> None:
    decoded: list[str] = []
    original = _images._decode

    def counting(path: Path, max_pixels: int) -> Image.Image:
        decoded.append(path.name)
        return original(path, max_pixels)

    monkeypatch.setattr(_images, "_decode", counting)
    images = open_images("builtin", transform)
    assert decoded == []
    batches = images.batches(2)
    next(batches)
    assert decoded == BUILTIN[:2]


# --------------------------------------------------------------------- datasets


class PilDataset(Dataset[tuple[Image.Image, int]]):
    def __len__(self) -> int:
        return 5

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return Image.new("L", (50, 40), index * 40), index + 10


def test_dataset_of_pil_images_with_labels(transform: Transform) -> None:
    images = open_images(PilDataset(), transform)
    assert images.ids == [f"dataset[{i}]" for i in range(5)]
    assert images.labels == [-1] * 5
    batches = _all(images, batch_size=2, start=1)
    assert [i for b in batches for i in b[1]] == images.ids[1:]
    assert torch.cat([b[2] for b in batches]).tolist() == [11, 12, 13, 14]
    assert batches[0][0].shape == (2, 3, 160, 160)
    assert images.labels == [-1, 11, 12, 13, 14]


def test_dataset_tensor_items(transform: Transform) -> None:
    preprocessed = torch.randn(3, 3, 160, 160)
    [(tensors, _, labels)] = _all(open_images(TensorDataset(preprocessed), transform))
    assert torch.equal(tensors, preprocessed)  # float tensors pass through untouched
    assert labels.tolist() == [-1, -1, -1]
    raw = torch.randint(0, 255, (2, 3, 20, 30), dtype=torch.uint8)
    labelled = TensorDataset(raw, torch.tensor([4, 5]))
    [(tensors, _, labels)] = _all(open_images(labelled, transform))
    assert tensors.shape == (2, 3, 160, 160) and labels.tolist() == [4, 5]


def test_dataset_subset_with_seed(transform: Transform) -> None:
    dataset = TensorDataset(torch.zeros(20, 3, 8, 8))
    ids = open_images(dataset, transform, limit=5, seed=0).ids
    assert ids == open_images(dataset, transform, limit=5, seed=0).ids
    indices = [int(i[len("dataset[") : -1]) for i in ids]
    assert indices == sorted(indices) and len(set(indices)) == 5
    assert open_images(dataset, transform, limit=5).ids == [f"dataset[{i}]" for i in range(5)]


def test_bad_dataset_items_are_clear_errors(transform: Transform) -> None:
    strings = [("a", 1)]
    with pytest.raises(ImageError, match=r"dataset\[0\] is a str"):
        _all(open_images(_ListDataset(strings), transform))
    mixed = [torch.zeros(3, 8, 8), torch.zeros(3, 9, 9)]
    with pytest.raises(ImageError, match="different shapes"):
        _all(open_images(_ListDataset(mixed), transform))
    with pytest.raises(ImageError, match="empty"):
        open_images(_ListDataset([]), transform)


class _ListDataset(Dataset[Any]):
    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Any:
        return self.items[index]


def test_dataloader_is_rebatched_with_ids_and_labels(transform: Transform) -> None:
    data = torch.randn(7, 3, 160, 160)
    loader = DataLoader(TensorDataset(data, torch.arange(7)), batch_size=3)
    images = open_images(loader, transform)
    assert images.ids == [f"dataset[{i}]" for i in range(7)]
    batches = _all(images, batch_size=4)
    assert [b[0].shape[0] for b in batches] == [4, 3]
    assert torch.equal(torch.cat([b[0] for b in batches]), data)
    assert torch.cat([b[2] for b in batches]).tolist() == list(range(7))
    resumed = _all(images, batch_size=4, start=5)
    assert [i for b in resumed for i in b[1]] == ["dataset[5]", "dataset[6]"]
    assert open_images(loader, transform, limit=2).ids == ["dataset[0]", "dataset[1]"]


def test_shuffled_dataloader_ids_say_loader(transform: Transform) -> None:
    loader = DataLoader(TensorDataset(torch.zeros(4, 3, 8, 8)), batch_size=2, shuffle=True)
    images = open_images(loader, transform)
    assert images.ids == [f"loader[{i}]" for i in range(4)]
    assert sum(b[0].shape[0] for b in _all(images)) == 4


@pytest.mark.parametrize("start", [0, 2])
def test_worker_processes_yield_the_same_batches_in_order(
    mixed_folder: Path, transform: Transform, start: int
) -> None:
    """Decoding in DataLoader workers changes nothing but where it runs: the same tensors,
    ids and order, the same file skipped when it fails to decode, resumable at any start."""
    alone = open_images(mixed_folder, transform)
    pooled = open_images(mixed_folder, transform)
    pooled.workers = 2
    expected = list(alone.batches(2, start=start))
    got = list(pooled.batches(2, start=start))
    assert [ids for _, ids, _ in got] == [ids for _, ids, _ in expected]
    for (a, _, la), (b, _, lb) in zip(expected, got, strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=0)
        assert la.tolist() == lb.tolist()
    assert pooled.skipped == alone.skipped and any("truncated" in r for _, r in pooled.skipped)


def test_workers_option_is_checked_and_auto_scales_with_the_image_count() -> None:
    from inspector import AnalyzeOptions, InspectorError
    from inspector.pipeline._resolve import image_workers

    with pytest.raises(InspectorError, match="--workers -1 must be 0"):
        AnalyzeOptions(workers=-1)
    assert image_workers(3, 9) == 3 and image_workers(0, 1000) == 0
    assert image_workers(None, 9) == 0  # a few images: no worker start-up
    assert image_workers(None, 1000) == min(4, max(0, (os.cpu_count() or 1) - 1))
