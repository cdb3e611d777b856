"""Image sources: the bundled samples, folders, single files and torch datasets.

:func:`open_images` turns a source into an :class:`ImageSet`: stable ids, labels and
lazily decoded, preprocessed batches. Folder listing checks only image headers (size,
format), so nothing is decoded until :meth:`ImageSet.batches` asks for it. Unreadable
or oversized files are skipped, recorded in :attr:`ImageSet.skipped` and logged on the
``inspector`` logger at WARNING level.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import timm.data
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, SequentialSampler
from torchvision.transforms.functional import to_pil_image

from ._decode import (
    DEFAULT_MAX_PIXELS,
    MAX_ASPECT,
    _aspect_problem,
    _decode,
    _header_problem,
    _to_rgb,
)
from ._decode import decode_image as decode_image
from ._errors import ImageError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "MAX_ASPECT",
    "ImageSet",
    "builtin_images_dir",
    "decode_image",
    "model_class_names",
    "model_transform",
    "open_images",
]

logger = logging.getLogger("inspector")

IMAGE_EXTENSIONS = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
"""File extensions picked up in folders (compared case-insensitively)."""

Transform = Callable[[Image.Image], torch.Tensor]
Batch = tuple[torch.Tensor, list[str], torch.Tensor]
# A reader yields (position, preprocessed image or the reason it was skipped, label)
# for every position from ``start`` on.
_Reader = Callable[[int], Iterator[tuple[int, "torch.Tensor | str", int]]]


def builtin_images_dir() -> Path:
    """The folder of the nine bundled sample photos (licences in ``LICENSES.md``)."""
    return Path(str(resources.files("inspector") / "data" / "sample_images"))


def model_transform(
    model: nn.Module, overrides: Mapping[str, Any] | None = None
) -> tuple[Transform, dict[str, Any]]:
    """The evaluation preprocessing timm defines for ``model``.

    Args:
        model: A timm model (any module works; unknown ones get timm's defaults).
        overrides: Data-config entries set by the user (``input_size`` ``(3, h, w)``,
            ``mean``, ``std``, ``interpolation``); they replace timm's.

    Returns:
        The transform (PIL RGB image to a ``(channel, height, width)`` tensor) and the
        data config it was built from (``input_size``, ``mean``, ``std``, ...).
    """
    config = dict(timm.data.resolve_model_data_config(model)) | dict(overrides or {})
    return timm.data.create_transform(**config, is_training=False), config


class ImageSet:
    """An ordered, lazily read collection of images with stable ids.

    Attributes:
        ids: One id per image: the path relative to the folder (posix, for the builtin
            set the file name), ``dataset[i]`` for a Dataset, ``loader[i]`` for a
            DataLoader that does not read its dataset in order.
        labels: One class index per image, -1 where unknown. A folder of class
            sub-folders has them from the folder names (see :func:`open_images`), other
            path sources none; a Dataset's are filled in as :meth:`batches` reads them.
        source: What the images came from (``builtin``, a path, a dataset type).
        skipped: ``(path, reason)`` for every file left out, at listing time or when a
            file that passed the header check failed to decode.
        labelling: How the labels were found, or why a folder of class sub-folders gave
            none (empty when there is nothing to say).
    """

    def __init__(
        self,
        ids: list[str],
        labels: list[int],
        source: str,
        reader: _Reader,
        paths: list[str] | None = None,
    ) -> None:
        self.ids = ids
        self.labels = labels
        self.source = source
        self.skipped: list[tuple[str, str]] = []
        self.files: list[Path] | None = None  # the image files, for path sources
        self.labelling = ""
        # DataLoader worker processes decoding path sources (0: in this process), and
        # whether their batches go to pinned memory (a CUDA run).
        self.workers = 0
        self.pin_memory = False
        self._reader = reader
        self._paths = paths if paths is not None else ids

    def __len__(self) -> int:
        return len(self.ids)

    def identity(self) -> str | None:
        """A SHA-256 digest of which images these are: each file's id, size and content
        (path sources); ``None`` for datasets, whose items have no file to hash. A resume
        compares it, so a folder whose images were renamed, replaced or edited is not
        continued as if nothing changed. Reads every file once (hashing runs at disk
        speed, far below the cost of decoding and a forward pass)."""
        if self.files is None:
            return None
        digest = hashlib.sha256()
        for image_id, path in zip(self.ids, self.files, strict=True):
            content = hashlib.sha256()
            try:
                with path.open("rb") as handle:
                    for block in iter(lambda: handle.read(1 << 20), b""):
                        content.update(block)
                size = path.stat().st_size
            except OSError as exc:
                content.update(f"unreadable: {exc.strerror}".encode())
                size = -1
            digest.update(f"{image_id}\0{size}\0{content.hexdigest()}\n".encode())
        return digest.hexdigest()

    def __repr__(self) -> str:
        return f"ImageSet({len(self)} images from {self.source}, {len(self.skipped)} skipped)"

    @property
    def warnings(self) -> list[str]:
        """One-line summaries of what was left out (empty when nothing was)."""
        if not self.skipped:
            return []
        shown = "; ".join(f"{Path(p).name}: {r}" for p, r in self.skipped[:3])
        more = f"; ... {len(self.skipped) - 3} more" if len(self.skipped) > 3 else ""
        return [f"skipped {len(self.skipped)} image file(s) from {self.source}: {shown}{more}"]

    def _skip(self, path: str, reason: str) -> None:
        if (path, reason) not in self.skipped:
            self.skipped.append((path, reason))
            logger.warning("skipped image %s: %s", path, reason)

    def batches(self, batch_size: int, start: int = 0) -> Iterator[Batch]:
        """Decode and preprocess the images batch by batch, in order.

        Only one batch is held at a time. An image that fails to decode is skipped
        (recorded in :attr:`skipped`), so a batch can come out short.

        Args:
            batch_size: Images per batch, at least 1.
            start: Position of the first image to read (to resume a run), 0 to
                ``len(self)``.

        Yields:
            ``(images, ids, labels)``: a ``(sample, channel, height, width)`` tensor,
            the ids of its samples, and their labels (int64, -1 where unknown).

        Raises:
            ImageError: Arguments out of range, or images of different sizes.
        """
        _check_int("batch_size", batch_size, 1)
        _check_int("start", start, 0)
        if start > len(self):
            raise ImageError(
                f"start={start} is past the last of {len(self)} images; "
                f"use a start between 0 and {len(self)}."
            )
        images: list[torch.Tensor] = []
        positions: list[int] = []
        for position, image, label in self._reader(start):
            if isinstance(image, str):
                self._skip(self._paths[position], image)
                continue
            if label >= 0:  # a Dataset's label; a folder's come from its class sub-folders
                self.labels[position] = label
            images.append(image)
            positions.append(position)
            if len(images) == batch_size:
                yield self._stack(images, positions)
                images, positions = [], []
        if images:
            yield self._stack(images, positions)

    def _stack(self, images: list[torch.Tensor], positions: list[int]) -> Batch:
        ids = [self.ids[p] for p in positions]
        shapes = {tuple(t.shape) for t in images}
        if len(shapes) > 1:
            raise ImageError(
                f"Images {', '.join(ids[:4])} from {self.source} have different shapes "
                f"{sorted(shapes)}; a batch needs one shape. Resize them in the dataset's "
                "transform, or pass PIL images so the model's transform applies."
            )
        labels = torch.tensor([self.labels[p] for p in positions], dtype=torch.int64)
        return torch.stack(images), ids, labels


def open_images(
    source: str | os.PathLike[str] | Dataset[Any] | DataLoader[Any],
    transform: Transform,
    limit: int | None = None,
    *,
    seed: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
) -> ImageSet:
    """Open an image source without decoding any image yet.

    Args:
        source: ``"builtin"`` (the bundled samples), a folder (searched recursively for
            :data:`IMAGE_EXTENSIONS`; hidden files and folders are ignored), an image
            file, a map-style torch ``Dataset`` (items: a PIL image or tensor, alone or
            as ``(image, label)``) or a ``DataLoader`` over one. Float tensors are
            taken as already preprocessed; PIL images and uint8 tensors get
            ``transform``.
        transform: Preprocessing from PIL RGB image to tensor, e.g. from
            :func:`model_transform`.
        limit: Use at most this many images (at least 1); None uses all.
        seed: With ``limit``, pick a seeded random subset instead of the first images
            (folders and Datasets; kept in source order). None picks the first.
        max_pixels: Files with more pixels are skipped as possible decompression bombs.
        num_classes: The model's classes (a timm model's ``num_classes``). A folder whose
            images all sit in sub-folders (``CLASS/image.jpg``, ImageFolder's layout) is
            labelled when every sub-folder's name is a class index below ``num_classes``
            (``0``, ``17``) or one of ``class_names``; otherwise (and with ``None``) it
            has no labels and :attr:`ImageSet.labelling` says why.
        class_names: The model's label name of each class index (timm's ImageNet
            synsets ``n01440764``, ..., see :func:`model_class_names`), or ``None``.

    Returns:
        The image set; nothing is decoded until :meth:`ImageSet.batches`.

    Raises:
        ImageError: The source does not exist, holds no readable image, or an argument
            is out of range.
    """
    if limit is not None:
        _check_int("limit", limit, 1)
    _check_int("max_pixels", max_pixels, 1)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ImageError(f"seed={seed!r} is not an integer; pass an int or None.")
    if isinstance(source, DataLoader):
        return _open_loader(source, transform, limit)
    if isinstance(source, Dataset):
        return _open_dataset(source, transform, limit, seed)
    if not isinstance(source, (str, os.PathLike)):
        raise ImageError(
            f"Image source of type {type(source).__name__} is not supported; expected "
            "'builtin', a folder, an image file, a torch Dataset or a DataLoader."
        )
    if isinstance(source, str) and source == "builtin":
        return _open_files(builtin_images_dir(), transform, limit, seed, max_pixels, "builtin")
    path = Path(os.fspath(source)).expanduser()
    if not path.exists():
        raise ImageError(
            f"Image source {str(path)!r} does not exist; expected 'builtin', a folder or an "
            "image file. Check the path."
        )
    images = _open_files(path, transform, limit, seed, max_pixels, str(path))
    if path.is_dir():
        _label_class_folders(images, num_classes, class_names)
    return images


def model_class_names(model: nn.Module) -> list[str] | None:
    """The label name of each of a timm model's classes, where timm knows them: the
    ImageNet synsets (``n01440764``, ...) of an ImageNet-1k/-22k classifier; else None."""
    classes = getattr(model, "num_classes", None)
    try:
        subset = timm.data.infer_imagenet_subset(model)
        info = timm.data.ImageNetInfo(subset) if subset else None
    except Exception:  # not a timm model, or timm without the class files
        return None
    if info is None or info.num_classes() != classes:
        return None
    return list(info.label_names())


def _label_class_folders(
    images: ImageSet, num_classes: int | None, class_names: Sequence[str] | None
) -> None:
    """Labels from the class sub-folders of a folder source (see :func:`open_images`)."""
    folders = [Path(i).parts[0] if len(Path(i).parts) == 2 else None for i in images.ids]
    if not folders or None in folders:
        return  # images directly in the folder or deeper down: not ImageFolder's layout
    names = sorted(set(folders), key=str)
    if num_classes is None:
        images.labelling = (
            "no labels (no accuracy) from the class sub-folders: the model states no "
            "num_classes to check their names against; pass a Dataset yielding (image, label)"
        )
        return
    index = {name: i for i, name in enumerate(class_names or ())}
    if all(n.isdecimal() and int(n) < num_classes for n in names):
        mapping = {n: int(n) for n in names}
        how = "named by class index"
    elif index and all(n in index for n in names):
        mapping = {n: index[n] for n in names}
        how = "named by the model's label names"
    else:
        shown = ", ".join(repr(n) for n in names[:4]) + (" ..." if len(names) > 4 else "")
        images.labelling = (
            f"no labels (no accuracy): the class sub-folders {shown} are neither class "
            f"indices below {num_classes} nor all the model's label names"
            + (f" (e.g. {class_names[0]})" if class_names else "")
            + "; accuracy needs folders named by class index (0, 1, ...) or a Dataset "
            "yielding (image, label)"
        )
        return
    images.labels[:] = [mapping[f] for f in folders if f is not None]
    images.labelling = f"labels from {len(names)} class sub-folders {how}"


# ------------------------------------------------------------------------ files


def _list_images(root: Path) -> tuple[list[Path], int]:
    """Image files under ``root`` in sorted relative-path order, and how many others."""
    found: list[Path] = []
    others = 0
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.startswith("."):
                continue
            if Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                found.append(Path(folder, name))
            else:
                others += 1
    return sorted(found, key=lambda p: p.relative_to(root).as_posix()), others


def _open_files(
    path: Path,
    transform: Transform,
    limit: int | None,
    seed: int | None,
    max_pixels: int,
    source: str,
) -> ImageSet:
    if path.is_dir():
        candidates, others = _list_images(path)
        ids_of = [p.relative_to(path).as_posix() for p in candidates]
    else:
        candidates, others, ids_of = [path], 0, [path.name]
    order = list(range(len(candidates)))
    if seed is not None and limit is not None:
        random.Random(seed).shuffle(order)
    chosen: list[int] = []
    skipped: list[tuple[str, str]] = []
    for index in order:
        if limit is not None and len(chosen) == limit:
            break
        reason = _header_problem(candidates[index], max_pixels)
        if reason is None:
            chosen.append(index)
        else:
            skipped.append((str(candidates[index]), reason))
    if not chosen:
        what = f"folder {str(path)!r}" if path.is_dir() else f"file {str(path)!r}"
        detail = f"{len(skipped)} unreadable or too large" if skipped else "none found"
        first = f"; first problem: {skipped[0][1]}" if skipped else ""
        raise ImageError(
            f"The {what} holds no readable image ({detail}{first}; {others} other files "
            f"ignored). Accepted extensions: {', '.join(IMAGE_EXTENSIONS)} (any case)."
        )
    chosen.sort()
    files = [candidates[i] for i in chosen]

    def reader(start: int) -> Iterator[tuple[int, torch.Tensor | str, int]]:
        decoded = _Decoded(files, transform, max_pixels, start)
        if images.workers < 1 or len(decoded) < 2:
            for i in range(len(decoded)):
                yield (*decoded[i], -1)
            return
        # Decoding overlaps the forward passes; items come back in order.
        loader = DataLoader(
            decoded,
            batch_size=None,
            num_workers=min(images.workers, len(decoded)),
            pin_memory=images.pin_memory,
            prefetch_factor=4,
        )
        for position, image in loader:
            yield int(position), image, -1

    ids = [ids_of[i] for i in chosen]
    images = ImageSet(ids, [-1] * len(files), source, reader, [str(f) for f in files])
    images.files = files
    images.skipped.extend(skipped)
    if skipped:
        logger.warning("%s", images.warnings[0])
    return images


class _Decoded(Dataset[tuple[int, "torch.Tensor | str"]]):
    """Files from ``start`` on, decoded and transformed: ``(position, tensor)``, or
    ``(position, why it cannot be decoded)``."""

    def __init__(self, files: list[Path], transform: Transform, max_pixels: int, start: int):
        self.files, self.transform = files, transform
        self.max_pixels, self.start = max_pixels, start

    def __len__(self) -> int:
        return len(self.files) - self.start

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | str]:
        position = self.start + index
        try:
            image = _decode(self.files[position], self.max_pixels)
        except Exception as exc:
            return position, f"cannot decode ({type(exc).__name__}: {exc})"
        return position, self.transform(image)


# --------------------------------------------------------------------- datasets


def _sized(dataset: object, what: str) -> int:
    if isinstance(dataset, IterableDataset) or not hasattr(dataset, "__len__"):
        raise ImageError(
            f"{what} {type(dataset).__name__} has no length (an IterableDataset?); "
            "pass a map-style Dataset with __len__ and __getitem__."
        )
    return len(dataset)  # type: ignore[arg-type]


def _label(value: object) -> int:
    if isinstance(value, torch.Tensor) and value.ndim == 0 and not value.is_floating_point():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return -1


def _item(item: object, transform: Transform, item_id: str) -> tuple[torch.Tensor, int]:
    """A dataset item as a preprocessed ``(channel, height, width)`` tensor and label."""
    label = -1
    if isinstance(item, (tuple, list)) and item:
        label = _label(item[1]) if len(item) > 1 else -1
        item = item[0]
    if isinstance(item, torch.Tensor) and item.ndim in (2, 3) and item.dtype == torch.uint8:
        item = to_pil_image(item)
    if isinstance(item, Image.Image):
        problem = _aspect_problem(*item.size)
        if problem is not None:
            raise ImageError(f"{item_id} is {problem}; crop or resize it in the dataset")
        return transform(_to_rgb(item)), label
    if isinstance(item, torch.Tensor) and item.is_floating_point() and item.ndim == 3:
        return item, label
    described = (
        f"a {item.dtype} tensor of shape {tuple(item.shape)}"
        if isinstance(item, torch.Tensor)
        else f"a {type(item).__name__}"
    )
    raise ImageError(
        f"{item_id} is {described}; expected a PIL image, a uint8 image tensor or a "
        "preprocessed float (channel, height, width) tensor, alone or as (image, label)."
    )


def _open_dataset(
    dataset: Dataset[Any], transform: Transform, limit: int | None, seed: int | None
) -> ImageSet:
    size = _sized(dataset, "Dataset")
    if size == 0:
        raise ImageError(f"Dataset {type(dataset).__name__} is empty; give it at least one item.")
    indices = list(range(size))
    if limit is not None and limit < size:
        indices = (
            sorted(random.Random(seed).sample(indices, limit))
            if seed is not None
            else indices[:limit]
        )
    ids = [f"dataset[{i}]" for i in indices]

    def reader(start: int) -> Iterator[tuple[int, torch.Tensor | str, int]]:
        for position in range(start, len(indices)):
            image, label = _item(dataset[indices[position]], transform, ids[position])
            yield position, image, label

    return ImageSet(ids, [-1] * len(ids), f"{type(dataset).__name__} dataset", reader)


def _open_loader(loader: DataLoader[Any], transform: Transform, limit: int | None) -> ImageSet:
    size = _sized(loader.dataset, "The DataLoader's dataset")
    sampled = len(loader.sampler) if hasattr(loader.sampler, "__len__") else size  # type: ignore[arg-type]
    if loader.drop_last and loader.batch_size:
        sampled -= sampled % loader.batch_size
    count = min(sampled, limit) if limit is not None else sampled
    if count == 0:
        raise ImageError(
            f"DataLoader over {type(loader.dataset).__name__} yields no item; "
            "give it a non-empty dataset (and check drop_last)."
        )
    in_order = isinstance(loader.sampler, SequentialSampler)
    ids = [f"dataset[{i}]" if in_order else f"loader[{i}]" for i in range(count)]

    def samples() -> Iterator[object]:
        for batch in loader:
            if isinstance(batch, (tuple, list)) and batch and not isinstance(batch[0], Image.Image):
                images, labels = batch[0], batch[1] if len(batch) > 1 else None  # collated
                for j in range(len(images)):
                    yield images[j] if labels is None else (images[j], labels[j])
            else:  # a batch tensor, or a list of PIL images from a custom collate_fn
                yield from batch

    def reader(start: int) -> Iterator[tuple[int, torch.Tensor | str, int]]:
        for position, item in enumerate(samples()):
            if position >= count:
                return
            if position >= start:
                image, label = _item(item, transform, ids[position])
                yield position, image, label

    return ImageSet(ids, [-1] * count, f"DataLoader over {type(loader.dataset).__name__}", reader)


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ImageError(f"{name}={value!r} is not allowed; pass an integer >= {minimum}.")
