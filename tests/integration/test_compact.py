"""A complete run file keeps wide layers' co-moment diagonal only; the .partial keeps all."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inspector import analyze
from inspector.store import _writer

FAST = ("attention_distance", "channel_redundancy", "head_redundancy")


def test_wide_layers_are_compacted_at_finish(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_writer, "MAX_STORED_COVARIANCE", 100)  # test_vit MLPs are 192 wide
    run = analyze(
        "test_vit", out=tmp_path / "run.h5", weights="random", limit=2, report=False,
        progress=False, analyses=FAST,
    )  # fmt: skip
    wide, narrow = run.layers["blocks.0.mlp.fc2"], run.layers["patch_embed.proj"]
    assert narrow.moments["comoment"].shape == (64, 64) and narrow.groups is not None
    assert wide.moments["comoment"].shape == (192,) and wide.groups is None
    assert "192 units > 100" in wide.attrs["compacted"]
    assert np.all(wide.moments["comoment"] > 0)  # the diagonal: per-channel co-moment
    # The analyses were computed from the full state before compaction.
    redundancy = run.analysis["channel_redundancy"]["layers"]["blocks.0.mlp.fc2"]
    assert 0 < redundancy["redundancy"] < 1 and redundancy["grouped_cka"].shape == (6, 6)
    assert not (tmp_path / "run.h5.partial").exists()
    # That run was short: finish() compacted the state it kept in memory. Checkpointed
    # after every batch, finish() compacts the .partial file's copy: the same file.
    checkpointed = analyze(
        "test_vit", out=tmp_path / "checkpointed.h5", weights="random", limit=2,
        report=False, progress=False, analyses=FAST, checkpoint_seconds=0,
    )  # fmt: skip
    assert list(checkpointed.layers) == list(run.layers)
    for name, layer in run.layers.items():
        other = checkpointed.layers[name]
        assert other.attrs == layer.attrs and (other.groups is None) == (layer.groups is None)
        for key, value in (layer.moments or {}).items():
            np.testing.assert_array_equal(other.moments[key], value, err_msg=f"{name} {key}")
