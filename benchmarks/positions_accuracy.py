"""How far the redundancy numbers move when fewer positions per image are sampled.

The capture's co-moments and CKA sums read ``positions`` sampled rows per image
(CONTRIBUTING.md decisions 6 and 35); ``AnalyzeOptions.positions`` chooses how many. This
runs ``head_redundancy`` and ``channel_redundancy`` on the same images with a few position
counts and with every position (the exact computation on those images), and compares
every reported number that carries a 95 % interval — redundancy and mean similarity of
heads (debiased CKA), of channel groups of head width (debiased CKA, the like-for-like
number) and of single channels (|Pearson r|, secondary) — with the exact run's value:
whether the sampled run's own 95 % interval covers the exact value, and how far the exact
value sits from the interval's centre in half-widths (``≤ 1``: inside).

Usage (trained weights from ``../shared/weights``; a folder of images, e.g. from
``benchmarks/augmented_images.py``)::

    .venv/bin/python benchmarks/positions_accuracy.py IMAGES_DIR --weights-dir ../shared/weights
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import inspector

MODELS = ("vit_tiny_patch16_224", "mobileone_s0")
ALL = 1 << 20  # more than any layer's positions: every row is kept
MEASURES = (
    ("head_redundancy", "heads, CKA"),
    ("channel_redundancy.grouped", "channel groups, CKA"),
    ("channel_redundancy", "channels, |r| (secondary)"),
)


def run_layers(model: str, weights: Path, images: Path, positions: int, out: Path):
    started = time.perf_counter()
    run = inspector.analyze(
        model,
        images=str(images),
        out=out / f"{model}-{positions}.h5",
        weights=str(weights),
        analyses=["head_redundancy", "channel_redundancy"],
        report=False,
        positions=positions,
        progress=False,
    )
    return run.to_dataframe("layers"), time.perf_counter() - started


def compare(exact, approx) -> list[list[str]]:
    """Per measure: the largest difference, and where the exact value falls in units of
    the sampled run's own interval (``≤ 1``: its stated interval covers the exact
    computation)."""
    rows = []
    for prefix, label in MEASURES:
        for stat in ("redundancy", "mean_similarity"):
            key = f"{prefix}.{stat}"
            if key not in exact:
                continue
            value, low, high = approx[key], approx[f"{key}_low"], approx[f"{key}_high"]
            diff = (exact[key] - value).abs()
            ok = value.notna() & exact[key].notna() & (high > low)
            if not ok.any():
                continue
            # Outside the interval: distance to the nearer end, in half-widths, plus one.
            half = ((high - low) / 2)[ok]
            centre = ((high + low) / 2)[ok]
            scaled = ((exact[key][ok] - centre).abs() / half).to_numpy()
            inside = ((exact[key][ok] >= low[ok]) & (exact[key][ok] <= high[ok])).to_numpy()
            rows.append(
                [
                    label,
                    stat.replace("_", " "),
                    str(int(ok.sum())),
                    f"{diff[ok].max():.3f}",
                    f"{np.median(scaled):.2f}",
                    f"{scaled.max():.2f}",
                    f"{inside.mean():.0%}",
                ]
            )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", type=Path)
    parser.add_argument("--weights-dir", type=Path, default=Path("../shared/weights"))
    parser.add_argument("--positions", default="16,32,64", help="comma-separated counts")
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args(argv)
    counts = [int(p) for p in args.positions.split(",")]
    header = (
        "| model | positions | units | measure | layers | max abs. difference "
        "| exact from centre, median (half-widths) | max | interval covers exact |"
    )
    lines = [header, "|" + " --- |" * 9]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for model in args.models.split(","):
            weights = args.weights_dir / f"{model}.safetensors"
            exact, seconds = run_layers(model, weights, args.images, ALL, out)
            images = int(np.nanmax(exact.filter(like=".images").to_numpy()))
            print(f"{model}: every position, {images} images, {seconds:.0f} s", flush=True)
            for count in counts:
                approx, seconds = run_layers(model, weights, args.images, count, out)
                print(f"{model}: {count} positions, {seconds:.0f} s", flush=True)
                for row in compare(exact, approx):
                    lines.append("| " + " | ".join([model, str(count), *row]) + " |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
