"""Effect of ``--autocast`` on the metrics: the same run with and without mixed precision.

Usage: python benchmarks/autocast_effect.py [MODEL] [--weights FILE|random] [--device cpu|cuda]

Prints, per metric, the largest absolute and relative difference between the float32
capture and the autocast capture (bfloat16 on CPU, float16 on CUDA) on the builtin images.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from inspector._api import analyze

ANALYSES = ("attention_distance", "attention_entropy", "head_redundancy", "channel_redundancy")
REPO = Path(__file__).resolve().parents[1]
TRAINED = REPO.parent / "shared" / "weights" / "vit_tiny_patch16_224.safetensors"


def _metrics(run) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    out = {}
    for name, values in run.analysis["attention_distance"]["layers"].items():
        out[f"distance px {name}"] = np.asarray(values["mean"])
    for name, values in run.analysis["attention_entropy"]["layers"].items():
        out[f"entropy nats {name}"] = np.asarray(values["mean"])
    for name, values in run.analysis["head_redundancy"]["layers"].items():
        out[f"head CKA {name}"] = np.nan_to_num(np.asarray(values["cka"]))
    for name, values in run.analysis["channel_redundancy"]["layers"].items():
        out[f"channel redundancy {name}"] = np.asarray([values["redundancy"]])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="vit_tiny_patch16_224")
    parser.add_argument("--weights", default=str(TRAINED) if TRAINED.exists() else "random")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    runs, seconds = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for autocast in (False, True):
            began = time.perf_counter()
            runs[autocast] = analyze(
                args.model, out=Path(tmp) / f"{autocast}.h5", weights=args.weights,
                device=args.device, autocast=autocast, analyses=ANALYSES, report=False,
                progress=False,
            )  # fmt: skip
            seconds[autocast] = time.perf_counter() - began
    exact, mixed = _metrics(runs[False]), _metrics(runs[True])
    groups: dict[str, list[tuple[float, float]]] = {}
    for key, value in exact.items():
        diff = np.abs(mixed[key] - value)
        rel = diff / np.maximum(np.abs(value), 1e-12)
        groups.setdefault(key.split(" ")[0] + " " + key.split(" ")[1], []).append(
            (float(diff.max()), float(rel.max()))
        )
    print(f"model {args.model}, weights {args.weights}, device {args.device}")
    print(f"{'metric':<22} {'max |diff|':>12} {'max rel':>10}")
    for metric, pairs in groups.items():
        print(f"{metric:<22} {max(p[0] for p in pairs):>12.4g} {max(p[1] for p in pairs):>10.3g}")
    print(f"wall: float32 {seconds[False]:.1f} s, autocast {seconds[True]:.1f} s")


if __name__ == "__main__":
    main()
