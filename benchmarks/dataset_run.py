"""A data-set-scale run: ``inspector analyze`` on a folder of N images, against a plain
forward over the same loader.

1. *Plain forward over the same loader*: the folder opened as ``inspector analyze`` opens
   it (``inspector.images.open_images`` with the model's preprocessing, the same DataLoader
   workers decoding while the model runs, the same batch size), every batch through the
   model under ``torch.no_grad()``: images/s with decoding included.
2. ``inspector analyze MODEL --images DIR --no-report`` with every default analysis, in a
   child process: wall time, each pass's seconds (the run file's ``timings``), the
   capture's images/s, the child's peak resident memory (``ru_maxrss``), the run file's
   size and the largest the ``.partial`` checkpoint grew to (its size polled every 0.2 s).

The plain loop runs before and after the run; the throughput ratio divides the capture's
images/s by the median of the two.

Usage (a folder from ``benchmarks/augmented_images.py``; random weights, offline)::

    .venv/bin/python benchmarks/augmented_images.py /tmp/aug1000 --count 1000
    .venv/bin/python benchmarks/dataset_run.py /tmp/aug1000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import _timing
import timm
import torch

sys.path.insert(0, str(_timing.REPO))

from inspector import open_run
from inspector.images import model_transform, open_images
from inspector.pipeline._resolve import image_workers


def plain_loop(model_name: str, folder: Path, batch: int, workers: int) -> tuple[int, float]:
    """Images and seconds of a plain forward over the folder's loader."""
    model = timm.create_model(model_name, pretrained=False).eval()
    images = open_images(str(folder), model_transform(model)[0], None)
    images.workers = workers
    started, count = time.perf_counter(), 0
    with torch.no_grad():
        for tensor, ids, _ in images.batches(batch):
            model(tensor)
            count += len(ids)
    return count, time.perf_counter() - started


def analyze(
    model_name: str, folder: Path, batch: int, workers: int, out: Path
) -> dict[str, object]:
    partial = out.with_name(out.name + ".partial")
    largest, done = [0], threading.Event()

    def poll() -> None:
        while not done.is_set():
            with contextlib.suppress(OSError):  # not there yet, or renamed away
                largest[0] = max(largest[0], partial.stat().st_size)
            time.sleep(0.2)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    command = [
        sys.executable, "-m", "inspector", "analyze", model_name, "--weights", "random",
        "--images", str(folder), "--batch-size", str(batch), "--workers", str(workers),
        "--out", str(out), "--no-report", "--quiet",
    ]  # fmt: skip
    started = time.perf_counter()
    finished = subprocess.run(command, capture_output=True, text=True, cwd=_timing.REPO)
    wall = time.perf_counter() - started
    done.set()
    watcher.join()
    if finished.returncode not in (0, 3):  # 3: an analysis failed, the file is written
        raise SystemExit(f"inspector analyze failed:\n{finished.stderr[-3000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    run = open_run(out)
    return {
        "wall": wall,
        "timings": dict(run.meta.get("timings", {})),
        "images": len(run.sample_ids),
        "peak_rss": peak,
        "file": out.stat().st_size,
        "largest_checkpoint": largest[0],
        "failed": list(run.meta.get("failed_analyses", [])),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", type=Path, help="a folder of images")
    parser.add_argument("--model", default="deit_small_patch16_224")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None, help="default: as analyze chooses")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)
    count = sum(1 for p in args.images.iterdir() if p.is_file())
    workers = image_workers(args.workers, count)
    _timing.log(f"{args.model}: {count} files, batch {args.batch}, {workers} loader workers")
    before = plain_loop(args.model, args.images, args.batch, workers)
    _timing.log(f"plain forward over the loader: {before[0]} images in {before[1]:.1f} s")
    with tempfile.TemporaryDirectory() as tmp:
        got = analyze(args.model, args.images, args.batch, workers, Path(tmp) / "run.h5")
    _timing.log(f"inspector analyze: {got['wall']:.1f} s wall")
    after = plain_loop(args.model, args.images, args.batch, workers)
    _timing.log(f"plain forward over the loader: {after[0]} images in {after[1]:.1f} s")
    plain_rate = statistics.median([before[0] / before[1], after[0] / after[1]])
    timings = got["timings"]
    assert isinstance(timings, dict)
    images = got["images"]
    assert isinstance(images, int)
    capture_rate = images / timings["capture"]
    got |= {
        "plain_images_per_s": [before[0] / before[1], after[0] / after[1]],
        "capture_images_per_s": capture_rate,
        "throughput_ratio": capture_rate / plain_rate,
        "workers": workers,
        "machine": _timing.machine(),
    }
    print(_timing.machine())
    print(f"{args.model}, {before[0]} images, batch {args.batch}, {workers} loader workers")
    rows = [[name, f"{seconds:.1f}"] for name, seconds in timings.items()]
    rows.append(["process wall (import, model, every pass, run file)", f"{got['wall']:.1f}"])
    print(_timing.table(["pass", "seconds"], rows))
    print(
        f"capture {capture_rate:.1f} images/s; plain forward over the same loader "
        f"{before[0] / before[1]:.1f} and {after[0] / after[1]:.1f} images/s; "
        f"ratio {got['throughput_ratio']:.2f}"
    )
    print(
        f"peak RSS {got['peak_rss'] / 2**30:.2f} GiB; run file {got['file'] / 2**20:.0f} MiB; "
        f"largest checkpoint {got['largest_checkpoint'] / 2**20:.0f} MiB"
    )
    if args.json:
        args.json.write_text(json.dumps(got, indent=1, default=str))


if __name__ == "__main__":
    main()
