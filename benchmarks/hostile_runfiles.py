"""Adversarial run-file campaign: malformed run files through ``inspector info``,
``inspector report`` and ``inspector compare`` (the real CLI, one child process each).

The files are made from the 1.1 golden run file (``tests/data/golden-run-1.1.h5``,
every analysis but the ERF) and a ``test_vit`` run written here: byte-level damage
(truncations, overwritten blocks, global heap objects whose size wraps libhdf5's
``size_t`` arithmetic), hostile structure (links, external storage, deep nesting,
filters, gzip bombs, unwritten chunks claiming gigabytes), things that are not regular
files (a named pipe, a folder, a link to ``/dev/zero``, a text file named ``.h5``), and
edits of the content re-sealed with a matching checksum manifest, so that only the
reader's schema checks stand between them and the report (7 summary rows for 2
images, ``heads = 10**15``, ``complete = "false"``, broken JSON, wrong shapes and
types in the analyses, ...).

Outcome of each command on each file:

- ``ok``: exit 0 (the file read as data);
- ``clean``: exit 1 with one line ``error: ...`` on stderr (warnings aside), no
  traceback, not the internal-error form ``error (ValueError): ... run with --debug``;
- ``unclean``: anything else that ends (another exit status, a traceback, several
  lines, the internal-error form);
- ``crash``: killed by a signal (segfault, abort);
- ``hang``: still running after ``--timeout`` seconds (killed then).

Also the peak memory (max RSS) and the wall time of each command, against the file's
size. Prints one JSON line per file and a total.

    .venv/bin/python benchmarks/hostile_runfiles.py --jobs 2 --json benchmarks/hostile_runfiles.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "data" / "golden-run-1.1.h5"
INSPECTOR = [sys.executable, "-m", "inspector"]

Edit = Callable[[h5py.File], None]


def _sealed(base: Path, out: Path, edit: Edit) -> None:
    """``base`` edited by ``edit`` and re-sealed: its checksum manifest matches."""
    from inspector.store._checksum import seal

    shutil.copyfile(base, out)
    with h5py.File(out, "r+") as handle:
        edit(handle)
        seal(handle)


def _unsealed(base: Path, out: Path, edit: Edit) -> None:
    shutil.copyfile(base, out)
    with h5py.File(out, "r+") as handle:
        edit(handle)


def _replace(node: h5py.Group, name: str, data: Any, **kwargs: Any) -> None:
    attrs = dict(node[name].attrs) if name in node else {}
    if name in node:
        del node[name]
    created = node.create_dataset(name, data=data, **kwargs)
    for key, value in attrs.items():
        created.attrs[key] = value


ATT = "layers/blocks.0.attn"
CH = "layers/patch_embed.proj"
DIST = "analysis/attention_distance/layers/blocks.0.attn"


def _content_edits() -> dict[str, Edit]:
    """Edits of the golden file's content (re-sealed afterwards)."""

    def attr(path: str, key: str, value: Any) -> Edit:
        return lambda f: f[path].attrs.__setitem__(key, value)

    def data(path: str, value: Any, **kw: Any) -> Edit:
        parent, _, name = path.rpartition("/")
        return lambda f: _replace(f[parent], name, value, **kw)

    def delete(path: str) -> Edit:
        return lambda f: f.__delitem__(path)

    return {
        "complete-string-false": attr("/", "complete", "false"),
        "complete-int-1": attr("/", "complete", 1),
        "complete-missing": lambda f: f.attrs.__delitem__("complete"),
        "heads-1e15": attr(ATT, "heads", 10**15),
        "heads-0": attr(ATT, "heads", 0),
        "heads-negative": attr(ATT, "heads", -3),
        "heads-text": attr(ATT, "heads", "two"),
        "heads-float": attr(ATT, "heads", 2.5),
        "channels-1e15": attr(CH, "channels", 10**15),
        "summary-7-rows": data(f"{ATT}/summaries/distance", np.zeros((7, 2), np.float32)),
        "summary-3-heads": data(f"{ATT}/summaries/entropy", np.zeros((2, 3), np.float32)),
        "summary-scalar": data(f"{ATT}/summaries/distance", np.float32(1)),
        "summary-text": data(f"{ATT}/summaries/distance", np.array([b"a", b"b"])),
        "summary-nan": data(f"{ATT}/summaries/distance", np.full((2, 2), np.nan, np.float32)),
        "summary-inf": data(f"{ATT}/summaries/distance", np.full((2, 2), np.inf, np.float32)),
        "maps-3d": data(f"{ATT}/maps", np.zeros((2, 101, 101), np.float16)),
        "maps-5-heads": data(f"{ATT}/maps", np.zeros((1, 5, 101, 101), np.float16)),
        "maps-9-images": data(f"{ATT}/maps", np.zeros((9, 2, 101, 101), np.float16)),
        "maps-nan": data(f"{ATT}/maps", np.full((1, 2, 101, 101), np.nan, np.float16)),
        "maps-tiny-keys": data(f"{ATT}/maps", np.zeros((1, 2, 3, 3), np.float16)),
        "moments-mean-2d": data(f"{CH}/moments/mean", np.zeros((8, 8))),
        "moments-comoment-mismatch": data(f"{CH}/moments/comoment", np.zeros((5, 5))),
        "moments-count-missing": delete(f"{CH}/moments/count"),
        "moments-count-negative": data(f"{CH}/moments/count", np.int64(-5)),
        "groups-cross-wrong": data(f"{CH}/groups/cross", np.zeros((3, 3))),
        "groups-norms-1d": data(f"{CH}/groups/norms", np.zeros(4)),
        "labels-3-for-2": data("samples/labels", np.zeros(3, np.int64)),
        "labels-float": data("samples/labels", np.zeros(2)),
        "ids-empty": data("samples/ids", np.array([], dtype=h5py.string_dtype())),
        "ids-3-for-2": data("samples/ids", np.array(["a", "b", "c"], dtype=h5py.string_dtype())),
        "images-done-99": attr("/", "images_done", 99),
        "input-size-zero": attr("/", "input_size", "[3, 0, 0]"),
        "input-size-huge": attr("/", "input_size", "[3, 1000000000, 1000000000]"),
        "input-size-text": attr("/", "input_size", '"big"'),
        "input-size-bad-json": attr("/", "input_size", "[3, 160"),
        "model-number": attr("/", "model", 7),
        "images-source-etc-passwd": attr("/", "images_source", "/etc/passwd"),
        "images-source-dev-zero": attr("/", "images_source", "/dev/zero"),
        "images-source-traversal": attr("/", "images_source", "/../../../../etc"),
        "timings-list": attr("/", "timings", "[1, 2]"),
        "failed-analyses-text": attr("/", "failed_analyses", '"all"'),
        "options-deep-json": attr("/", "options", "[" * 100000 + "]" * 100000),
        "module-order-number": attr("/", "module_order", "7"),
        "layers-order-bad-json": attr("layers", "order", "[blocks"),
        "layers-order-unknown": attr("layers", "order", '["nope", 5, null]'),
        "layer-kind-weird": attr(ATT, "kind", "weird"),
        "geometry-list": attr(ATT, "geometry", "[1, 2]"),
        "geometry-huge-grid": attr(
            ATT,
            "geometry",
            '{"kind": "global", "prefix": 1, "grid": [100000, 100000], "stride": [16.0, 16.0]}',
        ),
        "geometry-negative-prefix": attr(
            ATT,
            "geometry",
            '{"kind": "global", "prefix": -50, "grid": [10, 10], "stride": [16.0, 16.0]}',
        ),
        "geometry-zero-grid": attr(
            ATT,
            "geometry",
            '{"kind": "global", "prefix": 1, "grid": [0, 0], "stride": [0.0, 0.0]}',
        ),
        "site-text": attr(CH, "site", '"conv"'),
        "analysis-params-bad-json": attr("analysis/attention_distance", "params", "{"),
        "analysis-params-list": attr("analysis/attention_distance", "params", "[1]"),
        "analysis-version-999": attr("analysis/attention_distance", "analyzer_version", "999"),
        "analysis-version-text": attr("analysis/importance", "analyzer_version", "x.y"),
        "analysis-mean-7": data(f"{DIST}/mean", np.zeros(7)),
        "analysis-mean-text": data(f"{DIST}/mean", np.array([b"a", b"b"])),
        "analysis-mean-2d": data(f"{DIST}/mean", np.zeros((2, 2))),
        "analysis-mean-missing": delete(f"{DIST}/mean"),
        "analysis-unknown-layer": lambda f: f.move(DIST, DIST.replace("blocks.0", "ghost")),
        "analysis-cka-3x3": data(
            "analysis/head_redundancy/layers/blocks.0.attn/cka", np.zeros((3, 3))
        ),
        "analysis-cka-1d": data("analysis/head_redundancy/layers/blocks.0.attn/cka", np.zeros(4)),
        "analysis-importance-raw-5": data(
            "analysis/importance/layers/blocks.0.attn/raw", np.zeros(5, np.float32)
        ),
        "analysis-pruning-fractions-short": data(
            "analysis/pruning_curve/summary/heads/fractions", np.zeros(3)
        ),
        "analysis-pruning-fraction-text": attr(
            "analysis/pruning_curve/summary/heads", "prunable_fraction", "lots"
        ),
        "analysis-units-huge": attr(
            "analysis/head_redundancy/layers/blocks.0.attn", "units", str(10**15)
        ),
        "analysis-unknown-name": lambda f: f.copy(
            f["analysis/attention_entropy"], f["analysis"], name="mystery"
        ),
        "analysis-distance-nan": data(f"{DIST}/mean", np.full(2, np.nan)),
        "analysis-distance-negative": data(f"{DIST}/mean", np.full(2, -1e300)),
        "analysis-group-missing": delete("analysis/attention_distance/layers"),
        "samples-missing": delete("samples"),
        "layers-missing": delete("layers"),
        "analysis-missing": delete("analysis"),
        "attention-layer-empty": lambda f: [f[ATT].__delitem__(k) for k in list(f[ATT])],
        "control-chars-in-model": attr("/", "model", "evil\x1b[2J\x07\u202e\r\nnet"),
        "formula-layer-name": lambda f: f.move(ATT, "layers/=HYPERLINK(x)"),
        "markup-image-id": data(
            "samples/ids",
            np.array(
                ["<script>alert(1)</script>", "=cmd|' /C calc'!A0"], dtype=h5py.string_dtype()
            ),
        ),
    }


def _structure_edits() -> dict[str, Edit]:
    """Hostile structure (not re-sealed: the reader refuses it before checksums)."""
    return {
        "soft-link-loop": lambda f: f["analysis"].__setitem__("x", h5py.SoftLink("/analysis")),
        "external-link": lambda f: f["analysis"].__setitem__(
            "x", h5py.ExternalLink("/etc/passwd", "/")
        ),
        "hard-link-cycle": lambda f: f["analysis/importance"].__setitem__("x", f["analysis"]),
        "external-storage": lambda f: f["analysis"].create_dataset(
            "x", shape=(4,), dtype="f8", external=[("/etc/passwd", 0, 32)]
        ),
        "deep-nesting": lambda f: f["analysis"].create_group("/".join(["g"] * 40)),
        "lzf-filter": lambda f: f["analysis"].create_dataset(
            "x", data=np.zeros(1000), compression="lzf"
        ),
        "unwritten-10GB": lambda f: f["analysis"].create_dataset(
            "x", shape=(10**9,), dtype="f8", chunks=(1 << 16,)
        ),
        "gzip-bomb-2GB": lambda f: _bomb(f, 1 << 28),
        "gzip-bomb-256MB": lambda f: _bomb(f, 1 << 25),
        "object-reference-attr": lambda f: f["layers"].attrs.__setitem__("x", f["samples"].ref),
        "opaque-dataset": lambda f: f["analysis"].create_dataset(
            "x", data=np.zeros(4, dtype=h5py.opaque_dtype("V8"))
        ),
        "compound-dataset": lambda f: f["analysis"].create_dataset(
            "x", data=np.zeros(3, dtype=[("a", "i4"), ("b", "f8")])
        ),
        "vlen-int-dataset": lambda f: f["analysis"].create_dataset(
            "x", shape=(1,), dtype=h5py.vlen_dtype("i4")
        ),
        "attribute-8k-items": lambda f: f["layers"].attrs.__setitem__("x", np.zeros(8000)),
    }


def _bomb(handle: h5py.File, items: int) -> None:
    """A gzip-compressed dataset of ``items`` float64 zeros (8 bytes each), chunk by
    chunk: a few hundred kilobytes on disk."""
    dataset = handle["analysis"].create_dataset(
        "bomb", shape=(items,), dtype="f8", chunks=(1 << 20,), compression="gzip",
        compression_opts=9,
    )  # fmt: skip
    zeros = np.zeros(1 << 20)
    for start in range(0, items, 1 << 20):
        dataset[start : start + (1 << 20)] = zeros


def _heap_objects(data: bytes) -> list[tuple[int, int]]:
    """(collection start, first object offset) of every global heap collection."""
    found, at = [], data.find(b"GCOL")
    while at != -1:
        found.append((at, at + 16))
        at = data.find(b"GCOL", at + 1)
    return found


def _byte_edits(golden: bytes, rng: random.Random) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for fraction in (0.0, 0.01, 0.05, 0.2, 0.5, 0.8, 0.95, 0.999):
        out[f"truncated-{fraction}"] = golden[: int(len(golden) * fraction)]
    for start, first in _heap_objects(golden)[:2]:
        for name, size in (
            ("wrap-to-0", (1 << 64) - 16),
            ("wrap-back-16", (1 << 64) - 32),
            ("wrap-to-8", (1 << 64) - 8),
            ("zero", 0),
            ("past-end", 1 << 40),
        ):
            damaged = bytearray(golden)
            struct.pack_into("<Q", damaged, first + 8, size)
            out[f"heap-{start}-object-{name}"] = bytes(damaged)
        damaged = bytearray(golden)
        struct.pack_into("<HHIQ", damaged, first, 0, 0, 0, 0)
        out[f"heap-{start}-free-space-0"] = bytes(damaged)
        damaged = bytearray(golden)
        struct.pack_into("<Q", damaged, start + 8, (1 << 64) - 1)
        out[f"heap-{start}-collection-size-max"] = bytes(damaged)
    for index in range(20):
        damaged = bytearray(golden)
        at = rng.randrange(0, len(golden) - 64)
        length = rng.choice((1, 4, 8, 64))
        damaged[at : at + length] = bytes(rng.randrange(256) for _ in range(length))
        out[f"random-block-{index}-at-{at}"] = bytes(damaged)
    for index in range(10):
        damaged = bytearray(golden)
        source, target = rng.randrange(len(golden) - 512), rng.randrange(len(golden) - 512)
        damaged[target : target + 512] = golden[source : source + 512]
        out[f"splice-{index}-{source}-to-{target}"] = bytes(damaged)
    out["empty"] = b""
    out["text-named-h5"] = b"model,heads\nvit,12\n"
    out["hdf5-signature-only"] = b"\x89HDF\r\n\x1a\n" + bytes(600)
    return out


def _special(folder: Path) -> dict[str, Path]:
    """Paths that are not regular files."""
    out = {}
    fifo = folder / "named-pipe.h5"
    os.mkfifo(fifo)
    out["named-pipe"] = fifo
    directory = folder / "a-folder.h5"
    directory.mkdir()
    out["folder"] = directory
    zero = folder / "dev-zero.h5"
    zero.symlink_to("/dev/zero")
    out["link-to-dev-zero"] = zero
    loop = folder / "link-loop.h5"
    loop.symlink_to(loop)
    out["symlink-loop"] = loop
    sock = folder / "socket.h5"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock))
    out["socket"] = sock  # the socket object is kept open by the caller's lifetime
    _SOCKETS.append(server)
    return out


_SOCKETS: list[socket.socket] = []


def _run_file(folder: Path) -> Path:
    """A small real run (test_vit, random weights, 2 builtin images, every analysis)."""
    from inspector import analyze

    path = folder / "base-test_vit.h5"
    analyze(
        "test_vit", out=path, weights="random", limit=2, batch_size=2, device="cpu",
        keep_maps=2, report=False, progress=False, erf_images=2, pruning_images=2,
    )  # fmt: skip
    return path


def make_files(folder: Path, seed: int) -> dict[str, Path]:
    """Every malformed file of the campaign, by name."""
    rng = random.Random(seed)
    files: dict[str, Path] = {}
    golden = GOLDEN.read_bytes()
    for name, content in _byte_edits(golden, rng).items():
        path = folder / f"{name}.h5"
        path.write_bytes(content)
        files[name] = path
    for name, edit in _content_edits().items():
        path = folder / f"{name}.h5"
        _sealed(GOLDEN, path, edit)
        files[name] = path
    for name, edit in _structure_edits().items():
        path = folder / f"{name}.h5"
        _unsealed(GOLDEN, path, edit)
        files[name] = path
    files.update(_special(folder))
    base = _run_file(folder)
    for name, edit in {
        "vit-heads-1e15": lambda f: f["layers/blocks.0.attn"].attrs.__setitem__("heads", 10**15),
        "vit-summary-7-rows": lambda f: _replace(
            f["layers/blocks.1.attn/summaries"], "distance", np.zeros((7, 3), np.float32)
        ),
        "vit-erf-map-text": lambda f: _replace(
            f["analysis/receptive_field/layers/blocks.1.attn"], "map", np.array([b"x"])
        ),
        "vit-erf-map-3x3": lambda f: _replace(
            f["analysis/receptive_field/layers/blocks.1.attn"], "map", np.zeros((3, 3))
        ),
        "vit-erf-centre-5": lambda f: _replace(
            f["analysis/receptive_field/layers/blocks.1.attn"], "centre", np.zeros(5)
        ),
        "vit-erf-map-nan": lambda f: _replace(
            f["analysis/receptive_field/layers/blocks.0.attn"], "map", np.full((160, 160), np.nan)
        ),
    }.items():
        path = folder / f"{name}.h5"
        _sealed(base, path, edit)
        files[name] = path
    return files


COMMANDS = ("info", "report", "compare")

CHILD = r"""
import json, os, resource, sys, time
from pathlib import Path
from inspector.cli import main
path, golden, out, status = sys.argv[1:5]
args = {
    "info": ["info", path],
    "report": ["report", path, "-o", os.path.join(out, "r.html")],
    "compare": ["compare", path, golden, "-o", os.path.join(out, "c.html")],
}
for command in ("info", "report", "compare"):
    with open(status, "a") as log:  # what runs now: a crash or hang is blamed on it
        log.write(json.dumps({"start": command}) + "\n")
    capture = os.path.join(out, command + ".err")
    saved = os.dup(2), os.dup(1)
    sys.stderr.flush(); sys.stdout.flush()
    fd = os.open(capture, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 2); os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    started = time.monotonic()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        code = main(args[command])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException as exc:  # escaped main: unclean by definition
        print(f"ESCAPED {type(exc).__name__}: {exc}", file=sys.stderr)
        code = 99
    seconds = time.monotonic() - started
    sys.stderr.flush(); sys.stdout.flush()
    os.dup2(saved[0], 2); os.dup2(saved[1], 1); os.close(fd)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with open(status, "a") as log:
        log.write(json.dumps({"done": command, "status": code, "seconds": seconds,
                              "rss_mb": peak // 1024, "rss_grew_mb": (peak - before) // 1024,
                              "stderr": open(capture).read()[-800:]}) + "\n")
"""


def _outcome(status: int, stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line and not line.startswith("warning:")]
    if status == 0:
        return "ok"
    if (
        status == 1
        and len(lines) == 1
        and lines[0].startswith("error: ")  # not the internal form "error (ValueError): "
        and "Traceback" not in stderr
        and "Exception ignored" not in stderr
        and "run with --debug" not in stderr
    ):
        return "clean"
    return "unclean"


def run_file(path: Path, timeout: float) -> list[dict[str, Any]]:
    """``info``, ``report`` and ``compare`` on ``path``, one after the other in one child
    process (the real CLI's ``main``; stderr captured per command at the descriptor).
    Each command's outcome, wall time and peak memory (the process's ``ru_maxrss``,
    which only grows: ``rss_grew_mb`` is what the command added to it). A crash or hang
    is blamed on the command that was running; the ones after it are not run."""
    with tempfile.TemporaryDirectory() as out:
        status = Path(out) / "status"
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path), str(GOLDEN), out, str(status)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            start_new_session=True,
            text=True,
        )
        try:
            _, trailing = child.communicate(timeout=timeout)
            hung = False
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            _, trailing = child.communicate()
            hung = True
        events = (
            [json.loads(line) for line in status.read_text().splitlines()]
            if (status.exists())
            else []
        )
    results = []
    for event in events:
        if "done" in event:
            results.append({
                "command": event["done"], "outcome": _outcome(event["status"], event["stderr"]),
                "status": event["status"], "seconds": round(event["seconds"], 2),
                "rss_mb": event["rss_mb"], "rss_grew_mb": event["rss_grew_mb"],
                "stderr": event["stderr"].strip(),
            })  # fmt: skip
    started = [e["start"] for e in events if "start" in e]
    if len(started) > len(results):  # the last one started never finished
        outcome = "hang" if hung else "crash"
        results.append({"command": started[-1], "outcome": outcome, "status": child.returncode,
                        "seconds": timeout if hung else None, "rss_mb": None,
                        "rss_grew_mb": None, "stderr": trailing[-800:]})  # fmt: skip
    elif child.returncode != 0:
        results.append({"command": "exit", "outcome": "crash", "status": child.returncode,
                        "seconds": None, "rss_mb": None, "rss_grew_mb": None,
                        "stderr": trailing[-800:]})  # fmt: skip
    return results


def _made(folder: Path, seed: int) -> dict[str, Path]:
    """:func:`make_files` in a child process, so that this one stays small: every
    command's child is a fork of it, and a fork's peak memory (``ru_maxrss``) counts
    what its parent held (torch, the test_vit run) before it started the command. The
    child stays alive (holding the socket open) until this process ends."""
    maker = subprocess.Popen(
        [sys.executable, __file__, "--make", str(folder), "--seed", str(seed)],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    assert maker.stdout is not None
    files = {name: Path(path) for name, path in json.loads(maker.stdout.readline()).items()}
    _MAKERS.append(maker)
    return files


_MAKERS: list[subprocess.Popen[str]] = []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds: a hang")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--only", default=None, help="only these files (comma-separated names)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--make", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make is not None:  # the child that makes the files: prints {name: path}
        made = make_files(args.make, args.seed)
        print(json.dumps({n: str(p) for n, p in made.items()}), flush=True)
        time.sleep(10**6 if args.make.joinpath("socket.h5").exists() else 0)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        files = _made(Path(tmp), args.seed)
        if args.only:
            files = {n: p for n, p in files.items() if n in args.only.split(",")}

        def work(name: str) -> list[dict[str, Any]]:
            path = files[name]
            size = path.stat().st_size if path.is_file() else 0
            return [{"file": name, "bytes": size, **r} for r in run_file(path, args.timeout)]

        results = []
        with ThreadPoolExecutor(args.jobs) as pool:
            for batch in pool.map(work, list(files)):
                for result in batch:
                    results.append(result)
                    line = {k: v for k, v in result.items() if k != "stderr"}
                    said = result["stderr"].splitlines()
                    line["said"] = said[-1][:240] if said else ""
                    print(json.dumps(line), flush=True)
    counts = Counter(r["outcome"] for r in results)
    total = {
        "files": len(files),
        "commands": len(results),
        **{k: counts.get(k, 0) for k in ("ok", "clean", "unclean", "crash", "hang")},
        "slowest_s": max(r["seconds"] or 0 for r in results),
        "peak_rss_mb": max(r["rss_mb"] or 0 for r in results),
        "most_rss_added_by_one_command_mb": max(r["rss_grew_mb"] or 0 for r in results),
    }
    for maker in _MAKERS:
        maker.kill()
    print(json.dumps(total))
    if args.json:
        args.json.write_text(json.dumps({"total": total, "results": results}, indent=1) + "\n")
    return 1 if counts.get("unclean") or counts.get("crash") or counts.get("hang") else 0


if __name__ == "__main__":
    sys.exit(main())
