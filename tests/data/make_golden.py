"""Regenerate the golden run file of the current schema version (read back by tests).

A golden file is written once per released schema version and then never regenerated
for that version: ``tests/unit/test_golden.py`` reads it with the current reader, so a
reader or schema change that breaks old files fails the tests. Regenerate only when
the schema version changes (write a new file next to the old ones and keep them)::

    .venv/bin/python tests/data/make_golden.py

The run is tiny on purpose (kept under 300 KB): timm's ``test_vit`` with random
weights (seed 0), 2 builtin images (the subset seed 0 picks) in batches of 1, attention maps of the
first image, two layers (the patch embedding and the first attention, so that the
stored ``order`` differs from HDF5's alphabetical one) and every analysis but
``receptive_field``, whose 160 x 160 float32 ERF maps alone would double the size.
"""

from __future__ import annotations

import sys
from pathlib import Path

from inspector import AnalyzeOptions, analyze
from inspector.store import SCHEMA_VERSION

HERE = Path(__file__).resolve().parent
LAYERS = ("patch_embed.proj", "blocks.0.attn")
ANALYSES = (
    "attention_distance",
    "attention_entropy",
    "head_redundancy",
    "channel_redundancy",
    "importance",
    "pruning_curve",
)


def golden_path(version: str = SCHEMA_VERSION) -> Path:
    """Where the golden file of schema ``version`` lives."""
    return HERE / f"golden-run-{version}.h5"


def main() -> int:
    """Write the golden file of the current schema version; refuse to overwrite one."""
    path = golden_path()
    if path.exists() and "--force" not in sys.argv[1:]:
        print(f"{path} exists; golden files are never regenerated (use --force to override)")
        return 1
    options = AnalyzeOptions(
        weights="random",
        seed=0,
        limit=2,
        batch_size=1,
        keep_maps=1,
        erf_images=2,  # importance and pruning gradients
        layers=LAYERS,
        analyses=ANALYSES,
        device="cpu",
        report=False,
        progress=False,
    )
    run = analyze("test_vit", "builtin", out=path, options=options)
    size = path.stat().st_size
    print(f"wrote {run.path} ({size / 1024:.0f} KB, schema {SCHEMA_VERSION})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
