"""Calibration of the 95 % intervals (METRICS.md §7): do 9-image intervals hold the
estimate of all the images?

Splits a folder of at least ``20 × 9`` images (``benchmarks/augmented_images.py`` writes
one) into the first 180, runs the capture analyses once on all 180 and once on each of
20 disjoint sets of 9, and counts, per quantity, the fraction of the 9-image intervals
that contain the 180-image point estimate: per-head attention distance (MAD), per-layer
head redundancy and channel-group redundancy (debiased CKA, like for like).

Usage: python benchmarks/interval_calibration.py FOLDER [--model NAME] [--weights FILE]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inspector import AnalyzeOptions, analyze
from inspector.images import IMAGE_EXTENSIONS

ANALYSES = ("attention_distance", "head_redundancy", "channel_redundancy")
SETS, SIZE = 20, 9


def quantities(run) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``{quantity: (point, low, high)}``, each flattened over layers (and heads)."""
    out: dict[str, list] = {
        "per-head MAD": [],
        "head CKA redundancy": [],
        "channel-group CKA redundancy": [],
    }
    for layer in run.result("attention_distance").layers.values():
        out["per-head MAD"] += list(zip(layer.mean, layer.mean_low, layer.mean_high, strict=True))
    for layer in run.result("head_redundancy").layers.values():
        out["head CKA redundancy"].append(
            (layer.redundancy, layer.redundancy_low, layer.redundancy_high)
        )
    for layer in run.result("channel_redundancy").layers.values():
        g = layer.grouped
        if g is not None:
            out["channel-group CKA redundancy"].append(
                (g.redundancy, g.redundancy_low, g.redundancy_high)
            )
    return {k: tuple(np.array(v, dtype=float).T) for k, v in out.items() if v}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--model", default="vit_tiny_patch16_224")
    parser.add_argument("--weights", default="random")
    args = parser.parse_args(argv)
    files = sorted(p for p in args.folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if len(files) < SETS * SIZE:
        raise SystemExit(f"{args.folder} holds {len(files)} images; {SETS * SIZE} needed")
    files = files[: SETS * SIZE]
    options = AnalyzeOptions(
        weights=args.weights, analyses=ANALYSES, report=False, progress=False, overwrite=True
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        every = root / "all"
        every.mkdir()
        for path in files:
            shutil.copy(path, every / path.name)
        reference = quantities(
            analyze(args.model, images=every, out=root / "all.h5", options=options)
        )
        hits = {k: [] for k in reference}
        for index in range(SETS):
            folder = root / f"set{index}"
            folder.mkdir()
            for path in files[index * SIZE : (index + 1) * SIZE]:
                shutil.copy(path, folder / path.name)
            run = analyze(args.model, images=folder, out=root / f"set{index}.h5", options=options)
            for key, (_, low, high) in quantities(run).items():
                target = reference[key][0]
                ok = np.isfinite(low) & np.isfinite(high)
                hits[key] += list(((low <= target) & (target <= high))[ok])
            print(f"set {index + 1}/{SETS} done", file=sys.stderr, flush=True)
    print(
        f"{args.model} ({args.weights}): {SETS} disjoint sets of {SIZE} images vs all {SETS * SIZE}"
    )
    print("| quantity | intervals | hold the 180-image estimate |")
    print("| --- | --- | --- |")
    for key, values in hits.items():
        print(f"| {key} | {len(values)} | {np.mean(values):.1%} |")


if __name__ == "__main__":
    main()
