"""torchrun with 2 CPU processes on the gloo backend equals a single-process run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from inspector.store import read_run

ARGS = [
    "analyze", "test_vit", "--weights", "random", "--limit", "5", "--batch-size", "1",
    "--no-report", "--quiet", "--analyses",
    "attention_distance,attention_entropy,head_redundancy,channel_redundancy",
]  # fmt: skip


def _floats(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out |= _floats(value, f"{prefix}{key}/")
        elif isinstance(value, (np.ndarray, float)) and np.asarray(value).dtype.kind == "f":
            out[prefix + key] = np.asarray(value, dtype=np.float64)
    return out


def _close(a: np.ndarray, b: np.ndarray, what: str) -> None:
    # 1e-6 relative to the array's scale: debiased CKA of unrelated units sits near 0.
    scale = np.nanmax(np.abs(a)) if np.isfinite(a).any() else 1.0
    np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6 * scale, err_msg=what)


def test_two_gloo_processes_equal_one(tmp_path: Path) -> None:
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.fail(f"torchrun not found beside {sys.executable}")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    env["OMP_NUM_THREADS"] = "1"
    multi = subprocess.run(
        [str(torchrun), "--nproc_per_node=2", "--master_port=29517", "-m", "inspector",
         *ARGS, "--out", str(tmp_path / "multi.h5")],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert multi.returncode == 0, multi.stdout[-2000:] + multi.stderr[-4000:]
    single = subprocess.run(
        [sys.executable, "-m", "inspector", *ARGS, "--out", str(tmp_path / "single.h5")],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert single.returncode == 0, single.stderr[-4000:]
    one, two = read_run(tmp_path / "single.h5"), read_run(tmp_path / "multi.h5")
    assert two.sample_ids == one.sample_ids and len(one.sample_ids) == 5
    assert list(two.layers) == list(one.layers)
    for name, layer in one.layers.items():
        other = two.layers[name]
        for key, values in layer.summaries.items():
            _close(values, other.summaries[key], f"{name} summary {key}")
        if layer.maps is not None:
            np.testing.assert_array_equal(layer.maps, other.maps)
        assert int(layer.moments["count"]) == int(other.moments["count"])
        _close(layer.moments["comoment"], other.moments["comoment"], f"{name} comoment")
    for analysis, tree in one.analysis.items():
        mine = _floats(two.analysis[analysis])
        for key, values in _floats(tree).items():
            _close(values, mine[key], f"{analysis}/{key}")
