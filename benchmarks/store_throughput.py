"""Run-file write throughput: ``inspector.store.RunWriter.checkpoint`` against raw h5py
writes of the same arrays.

The layer trees are real: the capture state of a pass (the options ``inspector
analyze`` uses) over one batch of random images through a randomly initialised model,
so they hold what a checkpoint holds: per-image summaries, float16 first-K maps,
moment and CKA-sum accumulators (float64; most of the bytes).

Cases, timed in interleaved rounds (ratios to the first):

- ``raw h5py, same storage``: ``h5py.File.create_dataset`` of every array with the
  storage the writer chooses (maps gzip-4 + shuffle in per-map chunks, per-image rows
  chunked and resizable, accumulators contiguous), one flush, close;
- ``raw h5py, contiguous``: the same arrays, no compression or chunking;
- ``RunWriter, new file``: a writer, its first checkpoint and ``finish`` (wide layers
  compacted) — two files written, each ``fsync``-ed and renamed into place;
- ``RunWriter, staged finish``: a writer and ``finish`` of a state handed over in memory
  (``stage``: what a capture pass shorter than the checkpoint interval does);
- ``RunWriter, later checkpoint``: one more checkpoint of a running run, what a long
  capture pass pays every 30 s (a new file renamed onto the ``.partial``; the first-K
  maps are copied from the previous checkpoint without being encoded again).

The raw h5py cases neither ``fsync`` nor rename.

Files go to a temporary folder (``--dir`` to choose the disk).

Run::

    .venv/bin/python benchmarks/store_throughput.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import _timing
import h5py
import numpy as np
import timm
import torch

sys.path.insert(0, str(_timing.REPO))

import hooks
from inspector._options import AnalyzeOptions
from inspector.pipeline import capture_options, layer_order
from inspector.store import RunWriter

MODELS = ("deit_small_patch16_224", "resnet50")


def layer_tree(name: str, images: int) -> tuple[dict[str, Any], list[str]]:
    """The capture state (``CaptureState.to_tree``) of a pass over ``images`` random
    images, and the layer order."""
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval()
    size = model.pretrained_cfg.get("input_size", (3, 224, 224))
    x = torch.randn(images, *size, generator=torch.Generator().manual_seed(1))
    with hooks.capture(model, capture_options(model, AnalyzeOptions())) as cap, torch.no_grad():
        model(x)
    tree = cap.state().to_tree()
    return tree, layer_order(model, list(tree))


def arrays(tree: dict[str, Any]) -> Iterator[tuple[str, np.ndarray, str]]:
    """``(path, array, storage)`` of every array in a layer tree; storage is ``maps``,
    ``rows`` (per-image, resizable) or ``state`` (accumulators)."""
    for layer, data in tree.items():
        key = layer.replace("/", "_")
        for summary, array in (data.get("summaries") or {}).items():
            yield f"{key}/summaries/{summary}", np.asarray(array), "rows"
        if data.get("maps") is not None:
            yield f"{key}/maps", np.asarray(data["maps"]), "maps"
        for part in ("moments", "groups"):
            for field, array in (data.get(part) or {}).items():
                yield f"{key}/{part}/{field}", np.asarray(array), "state"


def raw_write(path: Path, tree: dict[str, Any], same_storage: bool) -> None:
    with h5py.File(path, "w") as handle:
        for name, array, storage in arrays(tree):
            options: dict[str, Any] = {}
            if same_storage and storage == "maps" and array.size:
                chunks = (1,) * (array.ndim - 2) + array.shape[-2:] if array.ndim > 2 else True
                options = {"compression": "gzip", "compression_opts": 4, "shuffle": True}
                options |= {"chunks": chunks, "maxshape": (None, *array.shape[1:])}
            elif same_storage and storage == "rows":
                options = {"chunks": True, "maxshape": (None, *array.shape[1:])}
            handle.create_dataset(name, data=array, **options)
        handle.flush()


def nbytes(tree: dict[str, Any]) -> int:
    return sum(array.nbytes for _, array, _ in arrays(tree))


def measure(
    name: str, images: int, repeats: int, folder: Path, clock: str = "wall"
) -> tuple[list[list[str]], dict[str, list[float]]]:
    tree, order = layer_tree(name, images)
    ids = [f"image{i}" for i in range(images)]
    labels = np.full(images, -1, dtype=np.int64)
    meta = {"model": name, "tool": "benchmark"}
    counter = iter(range(10**9))

    def fresh(stem: str) -> Path:
        path = folder / f"{stem}-{next(counter)}.h5"
        for old in folder.glob(f"{stem}-*"):
            old.unlink()
        return path

    def raw_same() -> None:
        raw_write(fresh("raw-same"), tree, same_storage=True)

    def raw_contiguous() -> None:
        raw_write(fresh("raw-contiguous"), tree, same_storage=False)

    def writer_new() -> None:
        writer = RunWriter(fresh("writer"), meta, "{}")
        writer.checkpoint(tree, ids, labels, batches_done=1, order=order)
        writer.finish()

    def writer_staged() -> None:
        writer = RunWriter(fresh("staged"), meta, "{}")
        writer.stage(tree, ids, labels, batches_done=1, order=order)
        writer.finish()

    running = RunWriter(folder / "running.h5", meta, "{}")
    running.checkpoint(tree, ids, labels, batches_done=1, order=order)

    def writer_later() -> None:
        running.checkpoint(tree, ids, labels, batches_done=2, order=order)

    cases: dict[str, Callable[[], object]] = {
        "raw h5py, same storage": raw_same,
        "raw h5py, contiguous": raw_contiguous,
        "RunWriter, new file": writer_new,
        "RunWriter, staged finish": writer_staged,
        "RunWriter, later checkpoint": writer_later,
    }
    _timing.log(f"{name}: {nbytes(tree) / 2**20:.0f} MiB of arrays per checkpoint")
    try:
        times = _timing.interleaved(cases, repeats=repeats, clock=clock, log=_timing.log)
    finally:
        running.close()
    ratios = _timing.ratios(times, "raw h5py, same storage")
    size = f"{nbytes(tree) / 2**20:.0f} MiB"
    rows = [[name, size, case, _timing.spread(ratios[case])] for case in cases]
    return rows, ratios


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated timm names")
    parser.add_argument("--images", type=int, default=16, help="images in the captured batch")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: temp)")
    _timing.add_clock_options(parser)
    args = parser.parse_args(argv)
    how = _timing.apply_clock_options(args)
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        for name in args.models.split(","):
            got, _ = measure(name, args.images, args.repeats, Path(folder), args.clock)
            rows += got
    print(_timing.machine())
    print(f"{args.images} images captured, {args.repeats} rounds, {how}; ratio to raw h5py")
    print(_timing.table(["model", "arrays", "case", "time ratio, median (min–max)"], rows))


if __name__ == "__main__":
    main()
