"""The ``inspector`` command line.

Exit status: 0 done; 1 an error (one clean line); 2 a usage error; 3 the run finished and
its file is written, but some analyses failed (each named with its reason, also in the
run file and the report); 130 interrupted.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import re
import sys
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path

from ._cli_parser import TABLES, parser
from ._errors import InspectorError, Interrupted
from ._options import AnalyzeOptions, parse_analyses
from ._text import terminal_safe

__all__ = ["main"]

logger = logging.getLogger("inspector")


class _Printer(logging.Handler):
    """Info lines to stdout; warnings to stderr, loud. Control characters in the names
    they hold (layers, images, files) are escaped."""

    def emit(self, record: logging.LogRecord) -> None:
        message = terminal_safe(record.getMessage(), keep_newlines=True)
        if record.levelno >= logging.WARNING:
            print(f"warning: {message}", file=sys.stderr, flush=True)
        else:
            print(message, flush=True)


class _WarningsToLog:
    """Python warnings (numpy's, torch's, timm's) as one ``warning:`` line each through
    the logger, each distinct message once, for the duration of a command; the previous
    ``warnings.showwarning`` is put back on exit."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, str]] = set()

    def show(
        self, message: Warning | str, category: type[Warning], *args: object, **kw: object
    ) -> None:
        text = " ".join(str(message).split())
        key = (category.__name__, text)
        if key not in self.seen:
            self.seen.add(key)
            logger.warning("%s: %s", category.__name__, text)

    def __enter__(self) -> _WarningsToLog:
        self.previous = warnings.showwarning
        warnings.showwarning = self.show  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        warnings.showwarning = self.previous


EXIT_FAILED_ANALYSES = 3
"""``inspector analyze`` finished and wrote the run, but some analyses failed."""


class _UsageError(Exception):
    """A command-line value that parses but is out of range (exit 2, like argparse)."""


def _numbers(flag: str, text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise _UsageError(f"{flag} {text!r} must be comma-separated numbers") from None


def _size(text: str | None) -> int | tuple[int, int] | None:
    if text is None:
        return None
    parts = text.lower().replace("×", "x").split("x")
    try:
        sides = [int(v) for v in parts]
    except ValueError:
        raise _UsageError(f"--input-size {text!r} must be N or HEIGHTxWIDTH in px") from None
    return sides[0] if len(sides) == 1 else (sides[0], sides[1]) if len(sides) == 2 else -1


def _analyze_options(args: argparse.Namespace, layers: tuple[str, ...] | None) -> AnalyzeOptions:
    """The options of ``inspector analyze`` (validated by :class:`AnalyzeOptions`)."""
    return AnalyzeOptions(
        input_size=_size(args.input_size),
        mean=_numbers("--mean", args.mean),
        std=_numbers("--std", args.std),
        interpolation=args.interpolation,
        weights=args.weights,
        limit=args.limit,
        batch_size=args.batch_size,
        seed=args.seed,
        device=args.device,
        layers=layers,
        analyses=parse_analyses(args.analyses),
        keep_maps=args.keep_maps,
        positions=args.positions,
        resume=args.resume,
        overwrite=args.overwrite,
        report=not args.no_report,
        progress=not args.quiet,
        workers=args.workers,
        autocast=args.autocast,
        erf_images=args.erf_images,
        pruning_images=args.pruning_images,
        adaptive=args.adaptive,
        precision=args.precision,
        max_images=args.max_images,
        pruning_threshold=args.pruning_threshold,
        pruning_order=args.pruning_order,
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
    from .present import failed_analyses, print_summary

    if int(os.environ.get("RANK", "0")) != 0:  # torchrun: rank 0 speaks for the run
        logger.setLevel(logging.ERROR)
        analyze(args.model, args.images, out=args.out, options=options.replace(progress=False))
        return 0
    run = analyze(args.model, args.images, out=args.out, options=options)
    print_summary(run)
    print(f"run file: {terminal_safe(run.path)}")
    report = run.path.with_suffix(".html")
    if report.exists() and not args.no_report:
        print(f"report:   {terminal_safe(report)}")
    failed = failed_analyses(run)
    if failed:
        print(
            f"finished with {len(failed)} failed analysis(es): {', '.join(failed)} "
            f"(exit status {EXIT_FAILED_ANALYSES}; reasons above and in the run file)",
            file=sys.stderr,
        )
        return EXIT_FAILED_ANALYSES
    return 0


def _info(args: argparse.Namespace) -> int:
    from .present import describe

    print(describe(args.run, verify=not args.no_verify))
    return 0


def _models(args: argparse.Namespace) -> int:
    from .present import describe_models

    print(describe_models(args.glob))  # no match: ModelNotFoundError, exit 1
    return 0


def _report(args: argparse.Namespace) -> int:
    from ._open import open_run
    from .present import write_run_report

    run = open_run(args.run, verify=not args.no_verify)
    path = write_run_report(run, args.output or args.run.with_suffix(".html"))
    print(f"report: {terminal_safe(path)}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from ._open import open_run
    from .present import write_compare_report

    runs = [open_run(path, verify=not args.no_verify) for path in args.runs]
    path = write_compare_report(runs, args.output or _compare_path(args.runs))
    print(f"report: {terminal_safe(path)}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from ._open import open_run
    from .present import export_tables

    run = open_run(args.run, verify=not args.no_verify)
    tables = TABLES if args.table == "all" else (args.table,)
    for path in export_tables(run, tables, args.format, args.out or args.run.parent):
        print(f"wrote {terminal_safe(path)}")
    return 0


def _compare_path(runs: Sequence[Path]) -> Path:
    """Where ``inspector compare`` writes without ``-o``: beside the first run file,
    named after the runs (``compare-deit_small-vs-vit_tiny.html``), so that it is never
    a surprise file in the working directory and comparisons of other runs do not
    replace it."""
    stems = [_FILE_UNSAFE.sub("_", path.stem) for path in runs]
    name = "compare-" + "-vs-".join(stems)
    if len(name) > 120:
        digest = hashlib.sha256("\0".join(map(str, runs)).encode()).hexdigest()[:8]
        name = f"compare-{stems[0][:60]}-and-{len(runs) - 1}-more-{digest}"
    return runs[0].parent / f"{name}.html"


_FILE_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


_COMMANDS = {
    "analyze": _analyze,
    "info": _info,
    "models": _models,
    "report": _report,
    "compare": _compare,
    "export": _export,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 clean error, 2 usage error, 3 finished
    with failed analyses, 130 interrupted)."""
    args = parser().parse_args(argv)
    handler = _Printer()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        with _WarningsToLog():
            return _COMMANDS[args.command](args)
    except BrokenPipeError:
        # the reader of our output went away (``inspector models | head``): not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except _UsageError as exc:
        print(f"inspector {args.command}: error: {terminal_safe(exc)}", file=sys.stderr)
        return 2
    except Interrupted as exc:
        print(f"interrupted: {terminal_safe(exc)}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        module = type(exc).__module__
        known = isinstance(exc, InspectorError) or module.split(".")[0] in ("hooks", "reports")
        prefix = "error" if known else f"error ({type(exc).__name__})"
        print(f"{prefix}: {terminal_safe(exc)}", file=sys.stderr)
        if not known and not args.debug:
            print("run with --debug for the traceback", file=sys.stderr)
        return 1
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = True
