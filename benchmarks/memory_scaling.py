"""Peak memory of the capture pass over 64 against 512 images (target: at most 10 % more).

Each case runs in a fresh subprocess and reports its peak resident set size
(``ru_maxrss``): ``inspector.analyze`` on ``deit_small_patch16_224`` with random
weights, a torch ``Dataset`` of random tensors at the model's input size (float tensors
are taken as preprocessed), the default options (batch 16, ``positions=64``, first-K
maps with K=8, checkpoints every 30 s), and only the ``attention_distance`` analysis so
that the capture pass (and writing its run file) is what runs; no report. A third case,
a plain forward loop over 512 images without inspector, is the floor: the model, torch
and one batch's activations.

The cases run in interleaved order (``--repeats`` times each) and the median peak of
each is reported; the growth is the ratio of the 512-image peak to the 64-image peak.

Run (about 15 minutes on a loaded 2-core machine)::

    .venv/bin/python benchmarks/memory_scaling.py
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import _timing
import torch
from torch.utils.data import Dataset

MODEL = "deit_small_patch16_224"


class RandomImages(Dataset):
    """``count`` preprocessed random images ``[3, height, width]``, each from its own seed."""

    def __init__(self, count: int, size: tuple[int, int, int]) -> None:
        self.count, self.size = count, size

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not 0 <= index < self.count:
            raise IndexError(index)
        generator = torch.Generator().manual_seed(index)
        return torch.randn(*self.size, generator=generator), -1


def child(case: str, count: int, batch: int) -> None:
    """Run one case in this process and print its peak RSS as JSON."""
    import time

    import timm

    sys.path.insert(0, str(_timing.REPO))
    import inspector

    began = time.perf_counter()
    if case == "plain":
        torch.manual_seed(0)
        model = timm.create_model(MODEL, pretrained=False).eval()
        images = RandomImages(count, model.pretrained_cfg["input_size"])
        with torch.no_grad():
            for start in range(0, count, batch):
                model(torch.stack([images[i][0] for i in range(start, min(count, start + batch))]))
    else:
        size = timm.get_pretrained_cfg(MODEL).input_size
        with tempfile.TemporaryDirectory() as folder:
            inspector.analyze(
                MODEL,
                RandomImages(count, size),
                out=Path(folder) / "run.h5",
                weights="random",
                batch_size=batch,
                device="cpu",
                analyses=("attention_distance",),
                report=False,
                progress=False,
            )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"peak_kib": peak, "seconds": time.perf_counter() - began}))


def run_case(case: str, count: int, batch: int) -> dict[str, float]:
    command = [sys.executable, __file__, "--child", case, "--count", str(count)]
    command += ["--batch", str(batch)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{case} {count}: failed\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=64)
    parser.add_argument("--large", type=int, default=512)
    parser.add_argument("--batch", type=int, default=16, help="analyze's default batch size")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", choices=("capture", "plain"), help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.count, args.batch)
        return
    cases = [("capture", args.small), ("capture", args.large), ("plain", args.large)]
    peaks: dict[tuple[str, int], list[float]] = {case: [] for case in cases}
    for round_ in range(args.repeats):
        order = cases if round_ % 2 == 0 else cases[::-1]
        for case in order:
            got = run_case(*case, args.batch)
            peaks[case].append(got["peak_kib"] / 2**10)
            _timing.log(f"  {case[0]} {case[1]} images: {peaks[case][-1]:.0f} MiB peak")
    small = statistics.median(peaks[cases[0]])
    rows = []
    for (case, count), values in peaks.items():
        what = "capture pass (inspector.analyze)" if case == "capture" else "plain forward loop"
        med = statistics.median(values)
        rows.append(
            [
                what,
                str(count),
                f"{med:.0f} ({min(values):.0f}–{max(values):.0f})",
                f"{med / small:.3f}",
            ]
        )
    print(_timing.machine())
    print(f"{MODEL}, batch {args.batch}, {args.repeats} fresh processes per case")
    header = ["case", "images", "peak RSS MiB, median (min–max)", f"ratio to {args.small} images"]
    print(_timing.table(header, rows))
    growth = statistics.median(peaks[cases[1]]) / small - 1
    verdict = "met" if growth <= 0.10 else "missed"
    print(f"growth {args.small} -> {args.large} images: {growth:+.1%} (target <= +10 %: {verdict})")


if __name__ == "__main__":
    main()
