"""Decoding one image file safely: header checks (size, shape, regular file) before
anything is decoded, upright RGB after (EXIF orientation, palettes with transparency)."""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image, ImageOps

from ._files import regular_file_problem

__all__ = ["DEFAULT_MAX_PIXELS", "MAX_ASPECT", "decode_image"]

DEFAULT_MAX_PIXELS = 89_478_485
"""Images with more pixels are skipped (PIL's decompression-bomb threshold)."""

MAX_ASPECT = 64
"""Images longer than this many times their width (or wider than this many times their
height) are skipped: the model's preprocessing resizes the shorter side to the input
size, so a 20000x1 strip of a few hundred bytes would become a 3 x 168 x 3,360,000
array (2.3 GB). Photographs and panoramas stay far below 64:1."""


def _header_problem(path: Path, max_pixels: int) -> str | None:
    """Why ``path`` cannot be used, judged from its header only; None if it looks fine."""
    problem = regular_file_problem(path)
    if problem is not None:
        return problem.removeprefix("is ")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
    except Image.DecompressionBombError as exc:
        return f"too large for PIL ({exc})"
    except Exception as exc:
        return f"unreadable ({type(exc).__name__}: {exc})"
    if width * height > max_pixels:
        return f"too large ({width}x{height} = {width * height} pixels > max_pixels={max_pixels})"
    return _aspect_problem(width, height)


def _aspect_problem(width: int, height: int) -> str | None:
    """Why an image's shape cannot be resized safely (empty, or too elongated); or None."""
    if min(width, height) < 1:
        return f"empty ({width}x{height} pixels)"
    if max(width, height) > MAX_ASPECT * min(width, height):
        return (
            f"too elongated ({width}x{height}, more than {MAX_ASPECT}:1; resizing its "
            "shorter side to the model's input size would take too much memory)"
        )
    return None


def decode_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """:func:`_decode` for other modules (the report's gallery)."""
    return _decode(path, max_pixels)


def _decode(path: Path, max_pixels: int) -> Image.Image:
    """Decode ``path`` as an upright RGB image, refusing more than ``max_pixels``, a
    shape beyond :data:`MAX_ASPECT` and anything but a regular file (a named pipe would
    block PIL's open forever)."""
    problem = regular_file_problem(path)
    if problem is not None:
        raise ValueError(f"{path} {problem}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise ValueError(f"{width}x{height} pixels exceed max_pixels={max_pixels}")
            problem = _aspect_problem(width, height)
            if problem is not None:
                raise ValueError(problem)
            image.load()
            return _to_rgb(ImageOps.exif_transpose(image))


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("P", "PA", "LA", "La"):  # palettes may carry transparency
        image = image.convert("RGBA")
    return image.convert("RGB")
