"""A folder of N augmented copies of the builtin photos, for data-set-scale runs offline.

Each copy is a seeded random resized crop (30-100 % of the area), a horizontal flip with
probability 1/2 and a brightness/contrast jitter of ±20 %, saved as JPEG (quality 90) at
its crop's size, at most 512 px on its longer side. The same N and seed give the same files.

Usage: python benchmarks/augmented_images.py OUT_DIR [--count 1000] [--seed 0]
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

from PIL import Image, ImageEnhance, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inspector.images import IMAGE_EXTENSIONS, builtin_images_dir


def augment(image: Image.Image, rng: random.Random) -> Image.Image:
    width, height = image.size
    area = rng.uniform(0.3, 1.0) * width * height
    aspect = rng.uniform(3 / 4, 4 / 3)
    w = min(width, round((area * aspect) ** 0.5))
    h = min(height, round((area / aspect) ** 0.5))
    left, top = rng.randint(0, width - w), rng.randint(0, height - h)
    out = image.crop((left, top, left + w, top + h))
    if rng.random() < 0.5:
        out = ImageOps.mirror(out)
    out = ImageEnhance.Brightness(out).enhance(rng.uniform(0.8, 1.2))
    out = ImageEnhance.Contrast(out).enhance(rng.uniform(0.8, 1.2))
    out.thumbnail((512, 512))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to write (created)")
    parser.add_argument("--count", type=int, default=1000, help="copies to write")
    parser.add_argument("--seed", type=int, default=0, help="seed of the augmentations")
    args = parser.parse_args(argv)
    paths = sorted(
        p for p in builtin_images_dir().iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS
    )
    sources = [Image.open(path).convert("RGB") for path in paths]
    args.out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    for index in range(args.count):
        source = sources[index % len(sources)]
        augment(source, rng).save(args.out / f"aug{index:05d}.jpg", quality=90)
    print(f"wrote {args.count} images to {args.out}")


if __name__ == "__main__":
    main()
