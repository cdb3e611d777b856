"""The ``inspector`` command line. Errors are one clean line (exit 1); usage errors exit 2."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from ._errors import InspectorError
from ._options import ALL_ANALYSES, AnalyzeOptions, parse_analyses
from ._version import __version__

_TABLES = ("heads", "units", "layers", "pruning")
"""The tables of ``inspector export`` (``Run.to_dataframe``)."""

__all__ = ["main"]

logger = logging.getLogger("inspector")


class _Printer(logging.Handler):
    """Info lines to stdout as they are; warnings to stderr, loud."""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            print(f"warning: {message}", file=sys.stderr, flush=True)
        else:
            print(message, flush=True)


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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inspector",
        formatter_class=_Help,
        description="Measure how far CNN channels and transformer heads look, and how "
        "redundant they are.",
    )
    parser.add_argument("--version", action="version", version=f"inspector {__version__}")
    parser.add_argument(
        "--debug", action="store_true", default=False, help="show tracebacks on errors"
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_SubParser
    )

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
        help=f"comma-separated subset of: {', '.join(ALL_ANALYSES)} (default: all)",
    )
    analyze.add_argument(
        "--out", default="inspector-runs", metavar="DIR", help="output folder or .h5 path"
    )
    analyze.add_argument("--no-report", action="store_true", help="do not write the HTML report")
    analyze.add_argument("--resume", action="store_true", help="continue an interrupted run")
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
    analyze.add_argument("--quiet", action="store_true", help="no progress bars")
    analyze.add_argument(
        "--autocast",
        action="store_true",
        help="capture under mixed precision (bfloat16 on CPU, float16 on CUDA)",
    )
    analyze.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )

    info = sub.add_parser("info", help="describe what a run file holds")
    info.add_argument("run", type=Path, metavar="RUN.h5", help="a run file")
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
        "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )

    compare = sub.add_parser("compare", help="one report comparing several run files")
    compare.add_argument("runs", type=Path, nargs="+", metavar="RUN.h5", help="run files")
    compare.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path("compare.html"),
        metavar="FILE",
        help="the HTML file",
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
        choices=("all", *_TABLES),
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
        "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    return parser


class _SubParser(argparse.ArgumentParser):
    """Subcommand parsers show defaults in their help, like the main one."""

    def __init__(self, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", _Help)
        super().__init__(**kwargs)  # type: ignore[arg-type]


class _UsageError(Exception):
    """A command-line value that parses but is out of range (exit 2, like argparse)."""


def _analyze_options(args: argparse.Namespace, layers: tuple[str, ...] | None) -> AnalyzeOptions:
    """The options of ``inspector analyze`` (validated by :class:`AnalyzeOptions`)."""
    return AnalyzeOptions(
        weights=args.weights,
        limit=args.limit,
        batch_size=args.batch_size,
        seed=args.seed,
        device=args.device,
        layers=layers,
        analyses=parse_analyses(args.analyses),
        keep_maps=args.keep_maps,
        resume=args.resume,
        report=not args.no_report,
        progress=not args.quiet,
        autocast=args.autocast,
    )


def _check_early(args: argparse.Namespace, layers: tuple[str, ...] | None) -> None:
    """Checks of ``analyze``'s arguments that need no model, made before torch loads."""
    if args.keep_maps < 0:
        raise _UsageError(f"--keep-maps {args.keep_maps} must be 0 (keep none) or more")
    if args.limit is not None and args.limit < 1:
        raise _UsageError(f"--limit {args.limit} must be at least 1")
    if args.images != "builtin" and not Path(args.images).exists():
        raise _UsageError(
            f"--images {args.images!r}: no such file or folder (give a folder of images, "
            "an image file or 'builtin')"
        )
    if layers is not None and any(not p for p in layers):
        raise _UsageError(f"--layers {args.layers!r} holds an empty pattern")
    device = args.device
    if device not in ("auto", "cpu", "cuda") and not (
        device.startswith("cuda:") and device[5:].isdigit()
    ):
        raise _UsageError(f"--device {device!r} is not one of auto, cpu, cuda, cuda:N")


def _analyze(args: argparse.Namespace) -> int:
    layers = tuple(p.strip() for p in args.layers.split(",")) if args.layers else None
    _check_early(args, layers)
    try:
        options = _analyze_options(args, layers)
    except InspectorError as exc:  # an option value out of range: a usage error
        raise _UsageError(str(exc)) from exc
    from ._api import analyze  # torch and timm load only once the command line is valid
    from .present import print_summary

    if int(os.environ.get("RANK", "0")) != 0:  # torchrun: rank 0 speaks for the run
        logger.setLevel(logging.ERROR)
        analyze(args.model, args.images, out=args.out, options=options.replace(progress=False))
        return 0
    run = analyze(args.model, args.images, out=args.out, options=options)
    print_summary(run)
    print(f"run file: {run.path}")
    report = run.path.with_suffix(".html")
    if report.exists() and not args.no_report:
        print(f"report:   {report}")
    return 0


def _info(args: argparse.Namespace) -> int:
    from .present import describe

    print(describe(args.run))
    return 0


def _models(args: argparse.Namespace) -> int:
    from .present import describe_models

    print(describe_models(args.glob))  # no match: ModelNotFoundError, exit 1
    return 0


def _report(args: argparse.Namespace) -> int:
    from ._open import open_run
    from .present import write_run_report

    run = open_run(args.run)
    path = write_run_report(run, args.output or args.run.with_suffix(".html"))
    print(f"report: {path}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from ._open import open_run
    from .present import write_compare_report

    runs = [open_run(path) for path in args.runs]
    path = write_compare_report(runs, args.output)
    print(f"report: {path}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from ._open import open_run
    from .present import export_tables

    run = open_run(args.run)
    tables = _TABLES if args.table == "all" else (args.table,)
    for path in export_tables(run, tables, args.format, args.out or args.run.parent):
        print(f"wrote {path}")
    return 0


_COMMANDS = {
    "export": _export,
    "analyze": _analyze,
    "info": _info,
    "models": _models,
    "report": _report,
    "compare": _compare,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 clean error, 2 usage error)."""
    args = _parser().parse_args(argv)
    handler = _Printer()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        return _COMMANDS[args.command](args)
    except BrokenPipeError:
        # the reader of our output went away (``inspector models | head``): not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except _UsageError as exc:
        print(f"inspector {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.command == "analyze":
            print(
                "interrupted: the work done so far is kept in the .partial file; "
                "run the same command with --resume to continue",
                file=sys.stderr,
            )
        else:
            print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        known = isinstance(exc, InspectorError) or type(exc).__module__.startswith("hooks")
        prefix = "error" if known else f"error ({type(exc).__name__})"
        print(f"{prefix}: {exc}", file=sys.stderr)
        if not known and not args.debug:
            print("run with --debug for the traceback", file=sys.stderr)
        return 1
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = True
