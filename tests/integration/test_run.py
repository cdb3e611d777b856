"""A whole run through the API: the run file it writes, an interruption and ``resume``."""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from support import assert_same_run

from inspector import AnalyzeOptions, RunFileError, analyze
from inspector.images import builtin_images_dir
from inspector.present import describe
from inspector.store import (
    ENCODING_TYPE,
    ENCODING_VERSION,
    JSON_ATTRS,
    SCHEMA_VERSION,
    Run,
    partial_path,
    read_run,
)

ANALYSES = ("attention_distance", "attention_entropy", "head_redundancy", "channel_redundancy")
OPTIONS = AnalyzeOptions(
    weights="random",
    limit=6,
    batch_size=2,
    keep_maps=3,
    device="cpu",
    analyses=ANALYSES,
    checkpoint_seconds=0,  # a checkpoint after every batch
    report=False,
    progress=False,
)
BUILTIN = sorted(p.name for p in builtin_images_dir().glob("*.jpg"))


def seeded_subset(ids: list[str], limit: int, seed: int) -> list[str]:
    """What ``--limit`` with ``--seed`` picks: the first ``limit`` of a seeded shuffle,
    in file order."""
    order = list(range(len(ids)))
    random.Random(seed).shuffle(order)
    return [ids[i] for i in sorted(order[:limit])]


SUBSET = seeded_subset(BUILTIN, OPTIONS.limit, OPTIONS.seed)


class Interrupted(Exception):
    """Raised by the test seam to stop a run after some batches."""


def _interrupt_after(batches: int) -> Any:
    def after_batch(done: int) -> None:
        if done == batches:
            raise Interrupted(f"stopped after {done} batches")

    return after_batch


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return analyze("test_vit", out=tmp_path_factory.mktemp("full"), options=OPTIONS)


@dataclass(frozen=True)
class Interruption:
    """A run stopped after 2 of its 3 batches, as it was right after the interruption."""

    path: Path  # the run's final path (its .partial is resumed by a test)
    final_existed: bool
    snapshot: Path  # a copy of the .partial file taken right after the interruption


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory: pytest.TempPathFactory) -> Interruption:
    out = tmp_path_factory.mktemp("interrupted")
    with pytest.raises(Interrupted):
        analyze("test_vit", out=out, options=OPTIONS.replace(_after_batch=_interrupt_after(2)))
    path = out / "test_vit.h5"
    snapshot = tmp_path_factory.mktemp("snapshot") / "test_vit.h5.partial"
    if partial_path(path).exists():
        shutil.copyfile(partial_path(path), snapshot)
    return Interruption(path, path.exists(), snapshot)


def test_interrupted_run_leaves_only_an_incomplete_partial(interrupted: Interruption) -> None:
    assert not interrupted.final_existed
    partial = interrupted.snapshot
    assert partial.exists()
    with h5py.File(partial, "r") as handle:
        assert not handle.attrs["complete"]
        assert handle.attrs["batches_done"] == 2
        assert handle.attrs["images_done"] == 4
        assert "analysis" not in handle
    with pytest.raises(RunFileError, match="incomplete run"):
        read_run(partial)
    run = read_run(partial, allow_incomplete=True)
    assert run.sample_ids == SUBSET[:4]
    assert all(layer.attrs["images"] == 4 for layer in run.layers.values())


def test_a_checkpoint_keeps_the_sums_and_refuses_another_build_s_form(
    interrupted: Interruption, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checkpoints hold CKA sums without the co-moment read from them (CONTRIBUTING.md
    41); a .partial of another form (a build before that) is refused by name, not
    resumed into wrong sums."""
    from inspector.pipeline import _plan

    with h5py.File(interrupted.snapshot, "r") as handle:
        layers = handle["layers"]
        tied = [n for n in layers if "groups" in layers[n]]
        assert tied and all("moments" not in layers[n] for n in tied)
        assert json.loads(handle.attrs["fingerprint"])["checkpoint_form"] == 2
    monkeypatch.setattr(_plan, "CHECKPOINT_FORM", 1)  # as an older build wrote it
    with pytest.raises(Interrupted):
        analyze("test_vit", out=tmp_path, options=OPTIONS.replace(_after_batch=_interrupt_after(1)))
    monkeypatch.undo()
    with pytest.raises(RunFileError, match=r"other settings \(checkpoint_form: 1 -> 2\)"):
        analyze("test_vit", out=tmp_path, options=OPTIONS.replace(resume=True))
    assert partial_path(tmp_path / "test_vit.h5").exists()


def test_resume_gives_the_numbers_of_an_uninterrupted_run(
    interrupted: Interruption, full_run: Run
) -> None:
    path = interrupted.path
    changed = OPTIONS.replace(resume=True, keep_maps=2)
    with pytest.raises(
        RunFileError, match=r"cannot resume: .*other settings \(keep_maps: 3 -> 2\)"
    ):
        analyze("test_vit", out=path.parent, options=changed)
    assert partial_path(path).exists() and not path.exists()  # left usable

    resumed = analyze("test_vit", out=path.parent, options=OPTIONS.replace(resume=True))
    assert resumed.complete and resumed.path == path
    assert not partial_path(path).exists()
    assert resumed.meta["batches_done"] == full_run.meta["batches_done"] == 3
    assert_same_run(full_run, resumed)
    assert set(resumed.analysis) == set(ANALYSES)
    started = read_run(interrupted.snapshot, allow_incomplete=True).meta["created"]
    assert resumed.meta["created"] == started  # when the interrupted run began


def test_run_file_root(full_run: Run) -> None:
    meta = full_run.meta
    assert full_run.complete
    assert meta["tool"] == "inspector"
    for key in ("tool_version", "timm_version", "torch_version"):
        assert isinstance(meta[key], str) and meta[key][0].isdigit(), key
    assert meta["model"] == meta["model_requested"] == "test_vit"
    assert meta["weights_source"] == "random"
    assert meta["weights_reason"] == "random initialisation requested"
    assert meta["input_size"] == [3, 160, 160]
    assert meta["options"]["analyses"] == list(ANALYSES)
    assert meta["options"]["limit"] == 6 and meta["options"]["batch_size"] == 2
    assert meta["created"].endswith("+00:00")  # UTC
    assert meta["images_done"] == 6 and meta["images_skipped"] == 0
    assert meta["schema"] == SCHEMA_VERSION
    assert full_run.sample_ids == SUBSET
    assert len(BUILTIN) == 9


def test_run_file_layers(full_run: Run) -> None:
    names = list(full_run.layers)
    attention = [f"blocks.{i}.attn" for i in range(6)]
    assert [layer.name for layer in full_run.attention_layers()] == attention
    assert names[0] == "patch_embed.proj"
    assert (
        names.index("blocks.0.attn")
        < names.index("blocks.0.mlp.fc2")
        < names.index("blocks.1.attn")
    )
    for name in attention:
        layer = full_run.layers[name]
        assert layer.attrs["geometry"]["kind"] == "global"
        assert layer.summaries["distance"].shape == (6, 2)
        assert layer.maps is not None and layer.maps.shape == (3, 2, 101, 101)
        assert layer.maps.dtype == np.float16


def test_run_file_encoding(full_run: Run) -> None:
    with h5py.File(full_run.path, "r") as handle:
        assert handle.attrs["complete"]
        maps = handle["layers/blocks.3.attn/maps"]
        assert maps.dtype == np.float16
        assert maps.chunks == (1, 1, 101, 101)
        assert maps.compression == "gzip"
        assert [d.label for d in maps.dims] == ["sample", "head", "query", "key"]
        assert [d.label for d in handle["samples/ids"].dims] == ["sample"]

        def visit(name: str, node: h5py.Group | h5py.Dataset) -> None:
            assert node.attrs.get(ENCODING_VERSION) == SCHEMA_VERSION, name
            assert node.attrs.get(ENCODING_TYPE), name
            if name.startswith("layers/") and isinstance(node, h5py.Dataset):
                assert all(d.label for d in node.dims), name
            _assert_json_attrs_listed(name, node)

        _assert_json_attrs_listed("/", handle)
        handle.visititems(visit)


def _assert_json_attrs_listed(name: str, node: h5py.Group | h5py.Dataset) -> None:
    """Every attribute stored as JSON text is one the reader decodes (schema JSON_ATTRS)."""
    for key, value in node.attrs.items():
        if not isinstance(value, str) or value[:1] not in "[{":
            continue
        try:
            json.loads(value)
        except ValueError:
            continue
        assert key in JSON_ATTRS, f"{name}: attribute {key!r} holds JSON the reader leaves as text"


def test_a_short_pass_is_written_by_finish_with_the_same_numbers(
    tmp_path: Path, full_run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the CLI's 30 s checkpoint interval, a pass shorter than that writes no
    capture checkpoint before the analyses: finish() writes the state kept in memory,
    and the run file equals the one checkpointed after every batch."""
    from inspector.store import _writer

    checkpoints: list[int] = []
    real = _writer.RunWriter.checkpoint

    def counting(self: Any, *args: Any, **kwargs: Any) -> None:
        checkpoints.append(kwargs["batches_done"])
        real(self, *args, **kwargs)

    monkeypatch.setattr(_writer.RunWriter, "checkpoint", counting)
    staged = analyze("test_vit", out=tmp_path, options=OPTIONS.replace(checkpoint_seconds=3600))
    assert checkpoints == []
    assert staged.complete and not partial_path(staged.path).exists()
    assert staged.meta["batches_done"] == full_run.meta["batches_done"] == 3
    assert_same_run(full_run, staged)


def test_the_seed_chooses_the_limit_subset(tmp_path: Path) -> None:
    """``--seed`` picks which ``--limit`` images run: another seed, other images; the same
    seed, the same images; ``inspector info`` names them."""
    options = OPTIONS.replace(limit=3, analyses=("attention_distance",), checkpoint_seconds=60)
    runs = {
        (seed, n): analyze(
            "test_vit", out=tmp_path / f"{seed}-{n}", options=options.replace(seed=seed)
        )
        for seed, n in ((1, 0), (2, 0), (1, 1))
    }
    picked = {key: run.sample_ids for key, run in runs.items()}
    assert picked[1, 0] == picked[1, 1] == seeded_subset(BUILTIN, 3, 1)
    assert picked[2, 0] == seeded_subset(BUILTIN, 3, 2)
    assert picked[1, 0] != picked[2, 0]
    for key, run in runs.items():
        assert f"image ids: {', '.join(picked[key])}" in describe(run.path)
