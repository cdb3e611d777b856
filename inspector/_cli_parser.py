"""The ``inspector`` command line's argument parser: its commands, options and help."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._options import ALL_ANALYSES
from ._version import __version__

__all__ = ["TABLES", "parser"]

TABLES = ("heads", "units", "layers", "pruning")
"""The tables of ``inspector export`` (``Run.to_dataframe``)."""


class _Help(argparse.RawDescriptionHelpFormatter):
    """Help that shows every option's default (except flags and unset options)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" in text
            or "default:" in text
            or default in (None, False, argparse.SUPPRESS)
            or not action.option_strings
        ):
            return text
        return f"{text} (default: %(default)s)"


def _dependencies() -> str:
    """What each analysis needs, for ``--help``: the model passes and other analyses."""
    from .analyzers import REGISTRY

    passes = {"erf": "a gradient pass", "gates": "a gate-gradient pass", "pruning": "ablations"}
    parts = []
    for name in ALL_ANALYSES:
        needs = [passes[n] for n in sorted(REGISTRY.needs([name])) if n in passes]
        required = sorted(REGISTRY.requires(name))
        if required:
            needs.append(f"{', '.join(required)} (run automatically)")
        if needs:
            parts.append(f"{name} needs {' and '.join(needs)}")
    return "; ".join(parts) + "."


def parser() -> argparse.ArgumentParser:
    """The parser of ``inspector`` and its subcommands."""
    top = argparse.ArgumentParser(
        prog="inspector",
        formatter_class=_Help,
        description="Measure how far CNN channels and transformer heads look, and how "
        "redundant they are.",
    )
    top.add_argument("--version", action="version", version=f"inspector {__version__}")
    top.add_argument(
        "--debug", action="store_true", default=False, help="show tracebacks on errors"
    )
    sub = top.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_SubParser
    )

    _analyze_parser(sub)
    _run_file_parsers(sub)
    return top


def _analyze_parser(sub: argparse._SubParsersAction) -> None:
    """``inspector analyze`` and its options."""
    analyze = sub.add_parser("analyze", help="capture and analyse a model; write a run file")
    analyze.add_argument("model", metavar="MODEL", help="timm name or alias, e.g. deit_small")
    analyze.add_argument(
        "--images",
        default="builtin",
        metavar="PATH",
        help="folder, image file or 'builtin' (the nine bundled images)",
    )
    analyze.add_argument(
        "--limit", type=int, default=None, metavar="N", help="use at most N images (default: all)"
    )
    analyze.add_argument(
        "--batch-size", type=int, default=16, metavar="N", help="images per forward pass"
    )
    analyze.add_argument("--device", default="auto", help="auto, cpu or cuda")
    analyze.add_argument(
        "--weights", default="auto", help="auto, pretrained, random or a weights file"
    )
    analyze.add_argument(
        "--layers",
        default=None,
        metavar="GLOB",
        help="glob(s) over layer paths, comma-separated, e.g. 'blocks.*' (default: every layer)",
    )
    analyze.add_argument(
        "--analyses",
        default=None,
        metavar="LIST",
        help=f"comma-separated subset of: {', '.join(ALL_ANALYSES)} (default: all). "
        f"{_dependencies()}",
    )
    analyze.add_argument(
        "--input-size",
        default=None,
        metavar="N|HxW",
        help="input side in px, or HEIGHTxWIDTH (default: timm's data config of the model)",
    )
    analyze.add_argument(
        "--mean",
        default=None,
        metavar="R,G,B",
        help="normalisation mean R,G,B (default: the data config's)",
    )
    analyze.add_argument(
        "--std",
        default=None,
        metavar="R,G,B",
        help="normalisation std R,G,B (default: the data config's)",
    )
    analyze.add_argument(
        "--interpolation",
        default=None,
        choices=("bilinear", "bicubic", "nearest"),
        help="resize interpolation (default: the data config's)",
    )
    analyze.add_argument(
        "--out", default="inspector-runs", metavar="DIR", help="output folder or .h5 path"
    )
    analyze.add_argument("--no-report", action="store_true", help="do not write the HTML report")
    analyze.add_argument("--resume", action="store_true", help="continue an interrupted run")
    analyze.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing run file at the output path (default: refuse)",
    )
    analyze.add_argument(
        "--seed",
        type=int,
        default=0,
        metavar="N",
        help="seeds random initialisation and picks which --limit images run (default: 0)",
    )
    analyze.add_argument(
        "--keep-maps",
        type=int,
        default=8,
        metavar="N",
        help="keep the attention maps of the first N images (0: none)",
    )
    analyze.add_argument(
        "--positions",
        type=int,
        default=64,
        metavar="N",
        help="token positions per image sampled (stratified at random) for the moment "
        "and CKA accumulators; rows = images x positions (default: 64)",
    )
    analyze.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="worker processes decoding a folder's images while the model runs "
        "(default: min(4, CPUs - 1) from 64 images on, else 0)",
    )
    analyze.add_argument("--quiet", action="store_true", help="no progress display")
    analyze.add_argument(
        "--autocast",
        action="store_true",
        help="capture under mixed precision (bfloat16 on CPU, float16 on CUDA)",
    )
    _pass_options(analyze)
    analyze.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )


def _pass_options(analyze: argparse.ArgumentParser) -> None:
    """The gradient passes' options of ``inspector analyze`` (an argument group)."""
    passes = analyze.add_argument_group("gradient passes (ERF, importance, pruning)")
    passes.add_argument(
        "--erf-images",
        type=int,
        default=16,
        metavar="N",
        help="images of the ERF pass, the first of --images (default: 16)",
    )
    passes.add_argument(
        "--pruning-images",
        type=int,
        default=16,
        metavar="N",
        help="images of importance + pruning: importance on the first half, the pruning "
        "curve on the held-out rest (default: 16)",
    )
    passes.add_argument(
        "--adaptive",
        action="store_true",
        help="add images until every 95%% interval of the headline numbers (ERF mean "
        "distance, pruning agreement) is narrower than --precision, or --max-images",
    )
    passes.add_argument(
        "--precision",
        type=float,
        default=0.05,
        metavar="P",
        help="--adaptive target half-width: relative for ERF distance, absolute for "
        "agreement (default: 0.05)",
    )
    passes.add_argument(
        "--max-images",
        type=int,
        default=128,
        metavar="N",
        help="--adaptive: most images per pass (default: 128)",
    )
    passes.add_argument(
        "--pruning-threshold",
        type=float,
        default=0.99,
        metavar="T",
        help="least top-1 agreement (interval lower bound) for 'removable' (default: 0.99)",
    )
    passes.add_argument(
        "--pruning-order",
        choices=("raw", "normalised"),
        default="raw",
        help="order units by raw |dL/dgate| or per-layer-normalised importance (default: raw)",
    )


def _run_file_parsers(sub: argparse._SubParsersAction) -> None:
    """The commands that read run files or list models: info, models, report, compare."""
    info = sub.add_parser("info", help="describe what a run file holds")
    info.add_argument("run", type=Path, metavar="RUN.h5", help="a run file")
    info.add_argument(
        "--no-verify",
        action="store_true",
        help="read a file whose checksums do not match (forensics)",
    )
    info.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )

    models = sub.add_parser("models", help="list timm architectures and what can be measured")
    models.add_argument(
        "glob",
        nargs="?",
        default="*",
        metavar="GLOB",
        help="glob over timm names ('swin*') or an alias ('swin') (default: every name)",
    )
    models.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )

    report = sub.add_parser("report", help="(re)render the HTML report of a run file")
    report.add_argument("run", type=Path, metavar="RUN.h5", help="a run file")
    report.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        metavar="FILE",
        help="the HTML file (default: the run file's name with .html)",
    )
    report.add_argument(
        "--no-verify",
        action="store_true",
        help="read a file whose checksums do not match (forensics)",
    )
    report.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )

    compare = sub.add_parser("compare", help="one report comparing several run files")
    compare.add_argument("runs", type=Path, nargs="+", metavar="RUN.h5", help="run files")
    compare.add_argument(
        "-o",
        "--out",
        "--output",
        dest="output",
        type=Path,
        default=None,
        metavar="FILE",
        help="the HTML file (default: compare-<run>-vs-<run>.html beside the first run file)",
    )
    compare.add_argument(
        "--no-verify",
        action="store_true",
        help="read a file whose checksums do not match (forensics)",
    )
    compare.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )

    export = sub.add_parser(
        "export", help="write a run's tables (per head, unit, layer, pruning step) as files"
    )
    export.add_argument("run", type=Path, metavar="RUN.h5", help="a run file")
    export.add_argument(
        "--format", choices=("csv", "parquet", "json"), default="csv", help="file format"
    )
    export.add_argument(
        "--table",
        choices=("all", *TABLES),
        default="all",
        help="which table: heads, units, layers, pruning or all",
    )
    export.add_argument(
        "-o",
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder for RUN.<table>.<format> (default: the run file's folder)",
    )
    export.add_argument(
        "--no-verify",
        action="store_true",
        help="read a file whose checksums do not match (forensics)",
    )
    export.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )


class _SubParser(argparse.ArgumentParser):
    """Subcommand parsers show defaults in their help, like the main one."""

    def __init__(self, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", _Help)
        super().__init__(**kwargs)  # type: ignore[arg-type]
