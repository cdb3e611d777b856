"""Capture-pass overhead: inspector's capture pass against a plain fused forward, and
against other tools capturing the same attention probabilities.

The capture pass is what ``inspector analyze`` runs per batch of a data-set-scale run
(``--images``, default 1,024): ``hooks.capture`` with the options ``analyze`` builds
(``inspector.pipeline.capture_options`` with the default ``AnalyzeOptions``: every
attention module with the six per-image per-head summaries of
``inspector._summaries.attention_summaries()``, per-head context moments and CKA sums,
channel moments of every convolution and MLP hidden layer on ``positions=64`` sampled
positions with CKA sums on groups of head width, the CKA sums of the image set's 20
contiguous image groups (intervals; each closed group's |r| summary), the heads' mean
maps for input dependence, full maps of the first ``K=8`` images,
``exact_outputs=False``). Batches are numbered as the image set's consecutive batches
(``Capture.seek``), so image groups open and close as they do in a real run.
Models have random weights; inputs are one random batch; everything runs on the CPU
under ``torch.no_grad()``.

Cases (times are divided by the plain fused forward's time in the same round):

- ``capture pass``: one batch of a running capture (the steady state of a long pass:
  the first ``K`` maps are already kept);
- ``capture pass, first batch``: a new capture per call (module discovery, geometry,
  accumulator set-up and the ``K`` maps kept);
- ``capture pass, --positions 16``: the same with 16 sampled positions per image instead
  of 64 (an estimator change: ``benchmarks/positions_accuracy.py`` measures its effect);
- ``attention only``: the same capture with channels and per-head moments off
  (probabilities, summaries, first-K maps), the like-for-like comparison with tools that
  only return attention maps;
- ``hooks.capture, probabilities only`` (with ``--peers``): every layer's probabilities
  handed to an ``on_attention`` callback that keeps them, nothing reduced: exactly what
  the peers return; once as ``analyze`` captures (``exact_outputs=False``: the fused
  call is answered from the probabilities, attention computed once, as the peers'
  unfused model does) and once with the fused kernel kept (``exact_outputs=True``, the
  ``hooks`` default: outputs bit-identical to the uncaptured model, attention computed
  twice);
- peers (``--peers``, attention models): the model with timm's fused attention switched
  off (which they need), timm's ``AttentionExtract`` (torch.fx, the ``*attn.softmax``
  nodes), captum's ``LayerActivation`` on every ``attn_drop`` and TorchLens
  (``torchlens.trace`` saving every ``attn_drop`` output) when it is installed. They
  keep every image's full map. Before timing, block 0's maps of every peer are checked
  against inspector's kept maps.

Run (about 20 minutes on a loaded 2-core machine; ``--repeats 3`` for a quick look)::

    .venv/bin/python benchmarks/capture_overhead.py
    .venv/bin/python benchmarks/capture_overhead.py --models deit_small_patch16_224 --peers
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
from collections.abc import Callable

import _timing
import timm
import torch
from torch import nn

sys.path.insert(0, str(_timing.REPO))

import hooks
from inspector._options import AnalyzeOptions
from inspector.pipeline import MeanMaps, capture_options

MODELS = ("deit_small_patch16_224", "resnet50", "swin_tiny_patch4_window7_224")


def unfused_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with timm's fused attention switched off (same weights)."""
    other = copy.deepcopy(model)
    for module in other.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = False
    return other


def peer_cases(
    model: nn.Module, x: torch.Tensor, reference: torch.Tensor
) -> dict[str, Callable[[], object]]:
    """Tools capturing every block's attention probabilities, each checked on block 0."""
    unfused = unfused_copy(model)
    drops = [n for n, m in unfused.named_modules() if n.endswith("attn.attn_drop")]
    cases: dict[str, Callable[[], object]] = {}

    def plain_unfused() -> object:
        with torch.no_grad():
            return unfused(x)

    cases["fused attention off (peers' model)"] = plain_unfused

    from timm.utils import AttentionExtract

    extract = AttentionExtract(unfused, method="fx")

    def timm_extract() -> object:
        with torch.no_grad():
            return extract(x)

    cases["timm AttentionExtract"] = timm_extract
    first = timm_extract()[extract.names[0]]  # type: ignore[index]
    check("timm AttentionExtract", first, reference)

    from captum.attr import LayerActivation

    layers = [unfused.get_submodule(n) for n in drops]
    activation = LayerActivation(unfused, layers)

    def captum_activation() -> object:
        with torch.no_grad():
            return activation.attribute(x)

    cases["captum LayerActivation"] = captum_activation
    check("captum LayerActivation", captum_activation()[0], reference)  # type: ignore[index]

    try:
        import torchlens
        from torchlens.options import CaptureOptions as LensOptions
    except ImportError:
        _timing.log("TorchLens is not installed (pip install torchlens): skipped")
        return cases
    lens = LensOptions(layers_to_save=drops, unwrap_when_done=True)

    def torchlens_trace() -> object:
        with torch.no_grad():
            return torchlens.trace(unfused, x, capture=lens)

    cases["TorchLens trace"] = torchlens_trace
    check("TorchLens trace", torchlens_trace()[drops[0]].out, reference)  # type: ignore[index]
    return cases


def check(name: str, probs: torch.Tensor, reference: torch.Tensor) -> None:
    """A peer's block-0 probabilities equal inspector's kept (float16) maps."""
    got = probs[: reference.shape[0]].float().cpu()
    difference = float((got - reference.float()).abs().max())
    if difference > 2e-3:
        raise SystemExit(f"{name}: block-0 maps differ from inspector's by {difference:.2e}")
    _timing.log(f"  {name}: block-0 maps equal inspector's (max difference {difference:.1e})")


def _analyze_capture(
    model: nn.Module, images: int, positions: int
) -> tuple[hooks.Capture, hooks.CaptureOptions]:
    """The capture ``inspector analyze`` runs on an image set of ``images`` images: its
    options (``pipeline.capture_options``: CKA sums in the set's image groups, |r|
    summaries of each closed group) and the input-dependence map sums bound to it."""
    mean_maps = MeanMaps()
    options = capture_options(model, AnalyzeOptions(positions=positions), images, mean_maps)
    cap = hooks.capture(model, options)
    mean_maps.bind(cap)
    return cap, options


def measure(
    name: str,
    batch: int,
    repeats: int,
    peers: bool,
    clock: str = "wall",
    device: str = "cpu",
    autocast: bool = False,
    images: int = 1024,
) -> tuple[list[list[str]], dict[str, list[float]]]:
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval().to(device)
    size = model.pretrained_cfg.get("input_size", (3, 224, 224))
    x = torch.randn(batch, *size, generator=torch.Generator().manual_seed(1)).to(device)
    running, options = _analyze_capture(model, images, positions=AnalyzeOptions().positions)
    fewer, _ = _analyze_capture(model, images, positions=16)

    def plain() -> torch.Tensor:
        with torch.no_grad():
            return model(x)

    def capture_pass(cap: hooks.Capture = running) -> torch.Tensor:
        with cap, torch.no_grad():
            cap.seek(cap.images % images)  # the image set's next batch, round and round
            return model(x)

    def first_batch() -> torch.Tensor:
        cap, _ = _analyze_capture(model, images, positions=AnalyzeOptions().positions)
        with cap, torch.no_grad():
            return model(x)

    cases: dict[str, Callable[[], object]] = {
        "plain fused forward": plain,
        "capture pass": capture_pass,
        "capture pass, first batch": first_batch,
        "capture pass, --positions 16": lambda: capture_pass(fewer),
    }
    if options.attention is not None:
        attention_options = hooks.CaptureOptions(
            attention=options.attention,
            channels=None,
            keep_maps=options.keep_maps,
            head_moments=False,
            summaries=options.summaries,
            geometry=options.geometry,
            exact_outputs=options.exact_outputs,
        )
        attention_only = hooks.capture(model, attention_options)

        def attention_pass() -> torch.Tensor:
            with attention_only, torch.no_grad():
                return model(x)

        cases["attention only"] = attention_pass
    if peers and options.attention is not None:
        kept: dict[str, torch.Tensor] = {}
        for exact in (False, True):
            probabilities_only = hooks.capture(
                model,
                attention=options.attention,
                channels=None,
                keep_maps=0,
                head_moments=False,
                geometry=options.geometry,
                on_attention=kept.__setitem__,
                exact_outputs=exact,
            )

            def probabilities_pass(cap: hooks.Capture = probabilities_only) -> object:
                kept.clear()
                with cap, torch.no_grad():
                    model(x)
                return dict(kept)

            label = ", fused kernel kept (exact outputs)" if exact else ""
            cases[f"hooks.capture, probabilities only{label}"] = probabilities_pass
    difference = float((capture_pass() - plain()).abs().max())
    _timing.log(f"{name}: outputs with and without capture differ by {difference:.1e}")
    if peers and options.attention is not None:
        first = next(iter(running.attention.values()))
        reference = torch.from_numpy(first.maps_array()[: options.keep_maps])
        cases |= peer_cases(model, x, reference)
    _timing.log(f"{name}: {len(cases)} cases, {repeats} rounds")
    if autocast:  # every case, the baseline too, as `analyze --autocast` runs its forward
        cases = {case: _autocast(fn, x.device) for case, fn in cases.items()}
    if x.device.type == "cuda":  # kernels run asynchronously: time until they finish
        cases = {case: _synchronised(fn) for case, fn in cases.items()}
    times = _timing.interleaved(cases, repeats=repeats, clock=clock, log=_timing.log)
    ratios = _timing.ratios(times, "plain fused forward")
    rows = [
        [name, case, _timing.spread(ratios[case]), f"{batch / statistics.median(times[case]):.0f}"]
        for case in cases
    ]
    return rows, ratios


def _autocast(fn: Callable[[], object], device: torch.device) -> Callable[[], object]:
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16

    def timed() -> object:
        with torch.autocast(device.type, dtype=dtype):
            return fn()

    return timed


def _synchronised(fn: Callable[[], object]) -> Callable[[], object]:
    def timed() -> object:
        out = fn()
        torch.cuda.synchronize()
        return out

    return timed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated timm names")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument(
        "--images",
        type=int,
        default=1024,
        help="size of the image set the capture is planned for (image groups, intervals)",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per model")
    parser.add_argument(
        "--autocast",
        action="store_true",
        help="every case under torch.autocast (float16 on CUDA, bfloat16 on CPU), as "
        "`inspector analyze --autocast` runs the capture pass",
    )
    parser.add_argument(
        "--peers",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="time peer tools too (default: on deit_small_patch16_224 only)",
    )
    _timing.add_clock_options(parser)
    args = parser.parse_args(argv)
    how = _timing.apply_clock_options(args)
    rows: list[list[str]] = []
    for name in args.models.split(","):
        peers = args.peers if args.peers is not None else name.startswith("deit_small")
        got, _ = measure(
            name,
            args.batch,
            args.repeats,
            peers,
            args.clock,
            args.device,
            args.autocast,
            args.images,
        )
        rows += got
    precision = ", autocast" if args.autocast else ""
    print(_timing.machine(args.device))
    print(
        f"batch {args.batch} of a {args.images}-image set, {args.repeats} rounds, "
        f"{how}{precision}; ratio to the plain fused forward"
    )
    header = ["model", "case", "time ratio, median (min–max)", "images/s (median)"]
    print(_timing.table(header, rows))


if __name__ == "__main__":
    main()
