"""Cost of the analysis passes per layer: gradient ERF, gate-gradient importance and
pruning curves (``inspector.pipeline``), in units of one plain forward of the same batch.

The layers and units are the ones ``inspector analyze`` uses: ERF layers from
``erf_layers`` (blocks and attention branches; convolutions for plain CNNs), head and
channel units from a capture pass with ``analyze``'s options. Models have random weights;
the batch is ``--images`` random images (``analyze`` uses ``erf_images=16``); CPU.

Cases, timed in interleaved rounds, each divided by the plain forward (``no_grad``) of
the same round:

- ``receptive_field``: ``erf_pass`` (one forward keeping every layer's output, then
  one ``autograd.grad`` per layer);
- ``importance``: ``importance_pass`` (one gated forward and backward for every head
  and channel gate, plus 6 single-unit ablations per unit kind on the first 4 images);
- ``pruning (heads)``, ``pruning (channels)``: ``pruning_pass`` over 10 steps (11 gated
  forwards) in a fixed unit order (the cost does not depend on the order).

Per layer: the pass divided by the number of layers it covers (ERF layers measured;
layers holding gated units).

Run (a loaded 2-core machine takes about 15 minutes per model at the defaults)::

    .venv/bin/python benchmarks/analysis_passes.py
    .venv/bin/python benchmarks/analysis_passes.py --models resnet50 --images 16 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable

import _timing
import timm
import torch

sys.path.insert(0, str(_timing.REPO))

import hooks
from inspector._options import AnalyzeOptions
from inspector.pipeline import (
    capture_options,
    erf_layers,
    erf_pass,
    gate_units,
    importance_pass,
    pruning_pass,
)

MODELS = ("deit_small_patch16_224", "resnet50")


def measure(name: str, images: int, repeats: int, clock: str = "wall") -> list[list[str]]:
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval()
    size = model.pretrained_cfg.get("input_size", (3, 224, 224))
    x = torch.randn(images, *size, generator=torch.Generator().manual_seed(1))
    with hooks.capture(model, capture_options(model, AnalyzeOptions())) as cap, torch.no_grad():
        model(x[:2])
    units = gate_units(hooks.gateable_heads(model), cap.state())
    geometry = {n: r.geometry for n, r in cap.attention.items()}
    layers = erf_layers(model, list(cap.attention), list(cap.channels))
    measured = len(erf_pass(model, x[:1], layers, geometry, progress=False)[0])

    def plain() -> object:
        with torch.no_grad():
            return model(x)

    cases: dict[str, Callable[[], object]] = {
        "plain forward": plain,
        "receptive_field": lambda: erf_pass(model, x, layers, geometry, progress=False),
        "importance": lambda: importance_pass(model, x, units),
    }
    per_layer = {
        "plain forward": 1,
        "receptive_field": measured,
        "importance": sum(len(v) for v in units.values()),
    }
    for kind, layer_units in units.items():
        order = [(path, unit) for path, count in layer_units.items() for unit in range(count)]

        def prune(kind: str = kind, layer_units: dict = layer_units, order: list = order) -> object:
            return pruning_pass(model, x, kind, layer_units, order)

        cases[f"pruning ({kind})"] = prune
        per_layer[f"pruning ({kind})"] = len(layer_units)
    _timing.log(
        f"{name}: {measured} ERF layers, "
        + ", ".join(f"{len(v)} layers of {k}" for k, v in units.items())
        + f"; {repeats} rounds"
    )
    plain()  # warm-up; the passes are long enough to need none
    times = _timing.interleaved(cases, repeats=repeats, warmup=0, clock=clock, log=_timing.log)
    ratios = _timing.ratios(times, "plain forward")
    rows = []
    for case, values in ratios.items():
        layers_in = per_layer[case]
        per = [v / layers_in for v in values]
        rows.append(
            [
                name,
                case,
                str(layers_in),
                _timing.spread(values, 1),
                f"{statistics.median(per):.2f} ({min(per):.2f}–{max(per):.2f})",
            ]
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated timm names")
    parser.add_argument("--images", type=int, default=8, help="batch of the passes")
    parser.add_argument("--repeats", type=int, default=3)
    _timing.add_clock_options(parser)
    args = parser.parse_args(argv)
    how = _timing.apply_clock_options(args)
    rows: list[list[str]] = []
    for name in args.models.split(","):
        rows += measure(name, args.images, args.repeats, args.clock)
    print(_timing.machine())
    print(f"batch {args.images}, {args.repeats} rounds, {how}; in plain forwards of that batch")
    header = ["model", "pass", "layers", "whole pass, median (min–max)", "per layer"]
    print(_timing.table(header, rows))


if __name__ == "__main__":
    main()
