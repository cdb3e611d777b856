"""Bit-flip campaign: single-bit flips at random offsets of finished run files.

Writes a finished run file of timm's ``test_vit`` and of ``deit_small_patch16_224``
(random weights, builtin images), flips one bit at a seeded random offset of a copy,
reads it with ``inspector.store.read_run`` (checksums verified) and classifies the read
(``tests/support/bitflip.py``): refused with a one-line ``RunFileError``, read identical (every
attribute and dataset value equal to the unflipped file's), read **silently** with
different values (the target is 0), or unclean (another exception, a crash or a hang of
the reading process). Prints the table of docs/reliability.md and writes
``benchmarks/bitflip_campaign.json``.

    .venv/bin/python benchmarks/bitflip_campaign.py            # 300 flips per model
    .venv/bin/python benchmarks/bitflip_campaign.py --flips 50 # quicker
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, TimeoutError
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

from support.bitflip import OUTCOMES, contents, trial  # noqa: E402

import inspector  # noqa: E402  (after the path set-up)

MODELS: dict[str, dict[str, Any]] = {
    "test_vit": {"weights": "random", "device": "cpu", "report": False, "progress": False},
    "deit_small_patch16_224": {
        "weights": "random",
        "limit": 2,
        "keep_maps": 1,
        "erf_images": 2,
        "analyses": (
            "attention_distance",
            "attention_entropy",
            "head_redundancy",
            "channel_redundancy",
            "importance",
            "pruning_curve",
        ),
        "device": "cpu",
        "report": False,
        "progress": False,
    },
}
"""The runs flipped: test_vit on the 9 builtin images with every analysis; deit_small on
2 images (1 kept attention map) with every analysis but ``receptive_field`` (whose maps
would triple the file), to keep each read about a second."""

_EXPECTED: dict[str, Any] = {}


def _worker(original: str, bit: int, scratch_dir: str) -> tuple[int, str, str]:
    """One flip, in a worker process (a crash or hang of libhdf5 stays there)."""
    if original not in _EXPECTED:
        _EXPECTED.clear()
        _EXPECTED[original] = contents(Path(original))
    scratch = Path(scratch_dir) / f"flip-{bit}.h5"
    try:
        outcome, detail = trial(Path(original), scratch, bit, _EXPECTED[original])
    finally:
        scratch.unlink(missing_ok=True)
    return bit, outcome, detail


def campaign(original: Path, flips: int, seed: int, workers: int) -> dict[str, Any]:
    """Flip ``flips`` random bits of ``original``, one file each; count the outcomes."""
    size = original.stat().st_size
    bits = random.Random(seed).sample(range(size * 8), flips)
    counts: Counter[str] = Counter()
    examples: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        pending = list(bits)
        while pending:
            batch, pending = pending[: workers * 8], pending[workers * 8 :]
            pool = ProcessPoolExecutor(max_workers=workers)
            futures = {bit: pool.submit(_worker, str(original), bit, scratch) for bit in batch}
            for bit, future in futures.items():
                try:
                    _, outcome, detail = future.result(timeout=300)
                except TimeoutError:
                    outcome, detail = "unclean", f"bit {bit}: no answer in 300 s (hang)"
                except BrokenProcessPool:
                    outcome, detail = "unclean", f"bit {bit}: the reading process died"
                counts[outcome] += 1
                if outcome != "identical" and len(examples.setdefault(outcome, [])) < 5:
                    examples[outcome].append(f"byte {bit // 8}: {detail[:300]}")
            pool.shutdown(wait=False, cancel_futures=True)
    return {
        "file_bytes": size,
        "flips": flips,
        "seed": seed,
        **{o: counts[o] for o in OUTCOMES},
        "examples": examples,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flips", type=int, default=300, help="flips per model file")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated subset")
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".json"))
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder:
        for model in args.models.split(","):
            options = MODELS[model]
            started = time.perf_counter()
            run = inspector.analyze(model, out=Path(folder) / f"{model}.h5", **options)
            print(f"{model}: {run.path.stat().st_size / 1e6:.1f} MB run file", flush=True)
            results[model] = campaign(run.path, args.flips, args.seed, args.workers)
            results[model]["seconds"] = round(time.perf_counter() - started, 1)
            print(json.dumps({k: v for k, v in results[model].items() if k != "examples"}))
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(
        "\n| run file | size | flips | refused (one-line error) | read identical | "
        "read silently different | unclean |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for model, r in results.items():
        print(
            f"| {model} | {r['file_bytes'] / 1e6:.1f} MB | {r['flips']} | {r['refused']} | "
            f"{r['identical']} | {r['silent']} | {r['unclean']} |"
        )
    total = {o: sum(r[o] for r in results.values()) for o in OUTCOMES}
    print(f"total: {sum(total.values())} flips, {total}")
    return 1 if total["silent"] or total["unclean"] else 0


if __name__ == "__main__":
    sys.exit(main())
