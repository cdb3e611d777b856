"""Child process of ``tests/robustness/test_faults.py``: a small run that announces each finished
batch on stdout and, after batch 2, waits until a "go" file appears (or 120 s pass), so
that the parent can stop it at a known point.

    python tests/support/fault_child.py api OUT GO  # inspector.analyze(...), checkpoint each batch
    python tests/support/fault_child.py cli OUT GO  # the real CLI (`inspector analyze ...`)

Not a test module (no ``test_`` prefix); ``test_faults.py`` imports its settings.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from inspector import AnalyzeOptions

ANALYSES = ("attention_distance", "attention_entropy", "head_redundancy", "channel_redundancy")
LAYERS = ("patch_embed.proj", "blocks.0.*", "blocks.5.attn")
OPTIONS = AnalyzeOptions(
    weights="random",
    limit=3,
    batch_size=1,
    keep_maps=2,
    device="cpu",
    layers=LAYERS,
    analyses=ANALYSES,
    checkpoint_seconds=0,  # a checkpoint after every batch
    report=False,
    progress=False,
)
"""Three batches of one builtin image through timm's ``test_vit``; a few layers only, so
that the many runs of the fault tests stay quick."""

CLI_ARGS = [
    "analyze", "test_vit", "--weights", "random", "--limit", "3", "--batch-size", "1",
    "--keep-maps", "2", "--device", "cpu", "--layers", ",".join(LAYERS),
    "--analyses", ",".join(ANALYSES), "--no-report", "--quiet",
]  # fmt: skip
"""The same run through the command line (same fingerprint as :data:`OPTIONS`)."""


def announcer(go: Path, wait_after: int = 2) -> Any:
    """An ``after_batch`` seam: print ``batch N``; after batch ``wait_after`` wait for ``go``."""

    def after_batch(done: int) -> None:
        print(f"batch {done}", flush=True)
        if done == wait_after:
            deadline = time.monotonic() + 120
            while not go.exists() and time.monotonic() < deadline:
                time.sleep(0.05)

    return after_batch


def main(argv: list[str]) -> int:
    mode, out, go = argv[0], argv[1], Path(argv[2])
    if mode == "api":
        from inspector import analyze

        analyze("test_vit", out=out, options=OPTIONS.replace(_after_batch=announcer(go)))
        return 0
    import dataclasses

    from inspector.cli import main as cli
    from inspector.pipeline import _capture

    real = _capture.run_capture_pass

    def with_seam(model: Any, plan: Any, *args: Any, **kwargs: Any) -> Any:
        options = plan.options.replace(_after_batch=announcer(go))
        return real(model, dataclasses.replace(plan, options=options), *args, **kwargs)

    _capture.run_capture_pass = with_seam  # the CLI exposes no seam; thread it in here
    return cli([*CLI_ARGS, "--out", out])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
