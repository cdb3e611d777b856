"""Golden run files: every released schema version stays readable by the current reader.

The files under ``tests/data/`` were written by ``tests/data/make_golden.py`` with the
inspector of their schema version and are never regenerated; the values checked here
are what those files hold. A failure means the reader or the schema changed
incompatibly: bump the major schema version (docs/run-file.md, "Versioning") instead
of editing these expectations.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from support import DATA, assert_same

import inspector
from inspector.analyzers import REGISTRY, DistanceResult, PruningCurveResult
from inspector.store import DIM_LABELS, ENCODING_TYPE, ENCODING_VERSION, read_run
from inspector.store._checksum import verify
from inspector.store._schema import MANIFEST, MANIFEST_DIGEST

GOLDEN_1_0 = DATA / "golden-run-1.0.h5"
GOLDEN_1_1 = DATA / "golden-run-1.1.h5"
ANALYSES = {
    "attention_distance",
    "attention_entropy",
    "channel_redundancy",
    "head_redundancy",
    "importance",
    "pruning_curve",
}


def test_golden_file_is_small() -> None:
    assert GOLDEN_1_0.stat().st_size < 300 * 1024
    # 1.1 chunks every dataset for its fletcher32 checksum: one chunk index each
    assert GOLDEN_1_1.stat().st_size < 400 * 1024


def test_golden_1_0_root() -> None:
    run = read_run(GOLDEN_1_0)
    assert run.complete
    assert run.model == "test_vit"
    meta = run.meta
    assert meta["tool"] == "inspector"
    assert meta["schema"] == "1.0"
    assert meta["model_requested"] == "test_vit"
    assert meta["resolution"] == "exact"
    assert meta["weights_source"] == "random"
    assert meta["weights_reason"] == "random initialisation requested"
    assert meta["input_size"] == [3, 160, 160]
    assert meta["images_source"] == "builtin"
    assert meta["batches_done"] == 2 and meta["images_done"] == 2
    assert meta["options"]["keep_maps"] == 1
    assert meta["options"]["layers"] == ["patch_embed.proj", "blocks.0.attn"]
    assert meta["options"]["analyses"] == [
        "attention_distance",
        "attention_entropy",
        "head_redundancy",
        "channel_redundancy",
        "importance",
        "pruning_curve",
    ]
    assert meta["fingerprint"]["model"] == "test_vit"
    assert meta["data_config"]["mean"] == [0.5, 0.5, 0.5]
    assert meta["module_order"][:2] == ["patch_embed", "patch_embed.proj"]
    assert set(meta["timings"]) >= {"capture", "total"}
    for key in ("tool_version", "timm_version", "torch_version", "created"):
        assert isinstance(meta[key], str) and meta[key]
    assert run.sample_ids == ["astronaut.jpg", "brick.jpg"]
    np.testing.assert_array_equal(run.labels, [-1, -1])


def test_golden_1_0_layers() -> None:
    run = read_run(GOLDEN_1_0)
    # model order, not HDF5's alphabetical one
    assert list(run.layers) == ["patch_embed.proj", "blocks.0.attn"]
    attention = run.layers["blocks.0.attn"]
    assert attention.kind == "attention"
    assert attention.attrs["heads"] == 2 and attention.attrs["images"] == 2
    geometry = attention.attrs["geometry"]
    assert (geometry["kind"], geometry["prefix"], geometry["grid"]) == ("global", 1, [10, 10])
    assert geometry["stride"] == [16.0, 16.0]
    assert set(attention.summaries) == {
        "distance",
        "distance_raw",
        "entropy",
        "entropy_normalised",
        "prefix_mass",
    }
    for values in attention.summaries.values():
        assert values.shape == (2, 2) and values.dtype == np.float32
    np.testing.assert_array_equal(
        attention.summaries["distance"],
        np.array([[82.96429, 83.00268], [82.99655, 82.974815]], np.float32),
    )
    assert attention.maps is not None
    assert attention.maps.shape == (1, 2, 101, 101) and attention.maps.dtype == np.float16
    np.testing.assert_allclose(attention.maps.astype(np.float64).sum(-1), 1.0, atol=0.02)
    assert attention.moments is not None and attention.groups is not None
    assert {k: v.shape for k, v in attention.moments.items()} == {
        "count": (),
        "mean": (64,),
        "comoment": (64, 64),
    }
    assert {k: v.shape for k, v in attention.groups.items()} == {
        "count": (),
        "sum": (64,),
        "shift": (64,),
        "cross": (64, 64),
        "weighted": (64, 2),
        "norms": (2, 2),
    }
    assert int(attention.moments["count"]) == int(attention.groups["count"]) > 0

    channel = run.layers["patch_embed.proj"]
    assert channel.kind == "channel"
    assert channel.attrs["channels"] == 64 and channel.attrs["images"] == 2
    assert channel.attrs["site"] == {"kind": "conv", "point": "output", "channel_axis": 1}
    assert channel.summaries == {} and channel.maps is None
    assert channel.moments is not None and channel.moments["comoment"].shape == (64, 64)


def test_golden_1_0_analysis() -> None:
    run = read_run(GOLDEN_1_0)
    assert set(run.analysis) == ANALYSES
    for result in run.analysis.values():
        assert result["analyzer_version"] == "1"
        assert isinstance(result["params"], dict) and result["params"]
        assert {"layers", "summary", "notes"} <= set(result)
    distance = run.analysis["attention_distance"]
    assert distance["params"] == {
        "shown": "renormalised",
        "queries": "spatial",
        "self_pair": "included",
    }
    layer = distance["layers"]["blocks.0.attn"]
    np.testing.assert_allclose(layer["mean"], [82.98041916, 82.98874664])
    assert layer["images"] == 2 and layer["windowed"] is False
    assert run.analysis["head_redundancy"]["layers"]["blocks.0.attn"]["cka"].shape == (2, 2)
    assert run.analysis["channel_redundancy"]["layers"]["patch_embed.proj"]["units"] == 64
    heads = run.analysis["pruning_curve"]["summary"]["heads"]
    assert heads["units"] == 2
    np.testing.assert_allclose(heads["fractions"], np.linspace(0, 1, 11))
    assert set(run.analysis["importance"]["layers"]) == {"patch_embed.proj", "blocks.0.attn"}


def test_golden_1_0_encoding_on_every_element() -> None:
    with h5py.File(GOLDEN_1_0, "r") as handle:
        assert handle.attrs[ENCODING_TYPE] == "inspector-run"
        assert handle.attrs[ENCODING_VERSION] == "1.0"
        assert json.loads(handle["layers"].attrs["order"]) == ["patch_embed.proj", "blocks.0.attn"]
        names: list[str] = []

        def visit(name: str, node: h5py.Group | h5py.Dataset) -> None:
            names.append(name)
            assert node.attrs.get(ENCODING_TYPE), name
            assert node.attrs.get(ENCODING_VERSION) == "1.0", name
            if isinstance(node, h5py.Dataset) and not name.startswith("analysis/"):
                labels = [d.label for d in node.dims]
                assert all(labels) and set(labels) <= set(DIM_LABELS), (name, labels)

        handle.visititems(visit)
        assert len(names) == 97
        maps = handle["layers/blocks.0.attn/maps"]
        assert [d.label for d in maps.dims] == ["sample", "head", "query", "key"]
        assert maps.compression == "gzip" and maps.chunks == (1, 1, 101, 101)
        assert [d.label for d in handle["samples/ids"].dims] == ["sample"]
        summary = handle["layers/blocks.0.attn/summaries/distance"]
        assert [d.label for d in summary.dims] == ["sample", "head"]


@pytest.mark.parametrize("golden", sorted(DATA.glob("golden-run-*.h5")), ids=lambda p: p.stem)
def test_every_golden_file_reads(golden: Path) -> None:
    """Any golden file added later (one per released schema version) stays readable."""
    run = read_run(golden)
    assert run.complete and run.layers and run.analysis and run.sample_ids


def _stored(tree: dict) -> dict:
    """A stored analysis tree without the attributes the writer adds beside the result."""
    return {k: v for k, v in tree.items() if k not in ("params", "analyzer_version")}


def test_golden_1_0_typed_results_equal_the_raw_trees() -> None:
    """``Run.result`` gives every stored number under a named field; its tree is the
    stored one, and it rebuilds from that tree unchanged."""
    run = inspector.open_run(GOLDEN_1_0)
    for name, tree in run.analysis.items():
        result = run.result(name)
        assert isinstance(result, REGISTRY.result_type(name))
        assert result.version == "1" and result.params == tree["params"]
        assert_same(_stored(tree), result.to_tree(), name)
        assert type(result).from_tree(result.to_tree(), result.params, result.version) == result
    distance = run.result("attention_distance")
    assert isinstance(distance, DistanceResult)
    layer = distance.layers["blocks.0.attn"]
    np.testing.assert_allclose(layer.mean, [82.98041916, 82.98874664])
    assert layer.images == 2 and layer.windowed is False
    assert run.result("head_redundancy").layers["blocks.0.attn"].cka.shape == (2, 2)
    assert run.result("channel_redundancy").layers["patch_embed.proj"].units == 64
    pruning = run.result("pruning_curve")
    assert isinstance(pruning, PruningCurveResult) and pruning.threshold == 0.99
    assert pruning.summary["heads"].units == 2
    np.testing.assert_allclose(pruning.summary["heads"].fractions, np.linspace(0, 1, 11))
    importance = run.result("importance")
    assert set(importance.layers) == {"patch_embed.proj", "blocks.0.attn"}
    assert importance.summary["heads"].ablation_images is None  # written before it existed


# -- schema 1.1: checksums -----------------------------------------------------------------


def test_golden_1_1_values() -> None:
    """Exact values of the 1.1 golden file, read through its checksum manifest."""
    run = read_run(GOLDEN_1_1)
    assert run.complete and run.model == "test_vit"
    assert run.meta["schema"] == "1.1"
    assert run.meta["weights_source"] == "random" and run.meta["input_size"] == [3, 160, 160]
    assert run.meta["batches_done"] == 2 and run.meta["images_done"] == 2
    assert run.sample_ids == ["gravel.jpg", "retina.jpg"]
    np.testing.assert_array_equal(run.labels, [-1, -1])
    assert list(run.layers) == ["patch_embed.proj", "blocks.0.attn"]
    attention = run.layers["blocks.0.attn"]
    assert attention.attrs["heads"] == 2 and attention.attrs["images"] == 2
    assert attention.attrs["geometry"]["grid"] == [10, 10]
    np.testing.assert_array_equal(
        attention.summaries["distance"],
        np.array([[82.99254, 82.98546], [83.05175, 83.0125]], np.float32),
    )
    assert attention.maps is not None and attention.maps.shape == (1, 2, 101, 101)
    assert int(attention.moments["count"]) == 128  # type: ignore[index]
    distance = run.analysis["attention_distance"]["layers"]["blocks.0.attn"]
    np.testing.assert_allclose(distance["mean"], [83.02214432, 82.99897766], rtol=0, atol=1e-8)
    cka = run.analysis["head_redundancy"]["layers"]["blocks.0.attn"]["cka"]
    np.testing.assert_allclose(cka, [[1.0, 0.99999161], [0.99999161, 1.0]], rtol=0, atol=1e-8)
    heads = run.analysis["pruning_curve"]["summary"]["heads"]
    assert heads["units"] == 2 and heads["prunable_fraction"] == 0.2
    np.testing.assert_array_equal(heads["agreement"], [1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.5, 0, 0, 0])


def test_golden_1_1_checksums_on_every_element() -> None:
    """fletcher32 on every dataset that can carry it; a manifest entry for every element."""
    with h5py.File(GOLDEN_1_1, "r") as handle:
        assert handle.attrs[ENCODING_VERSION] == "1.1"
        manifest = json.loads(handle[MANIFEST][()].tobytes())
        assert manifest["algorithm"] == "sha256"
        names = ["/"]

        def visit(name: str, node: h5py.Group | h5py.Dataset) -> None:
            if name == MANIFEST:
                return
            names.append(node.name)
            assert node.attrs.get(ENCODING_VERSION) == "1.1", name
            if isinstance(node, h5py.Dataset) and node.shape and node.dtype.kind != "O":
                assert node.fletcher32 and node.chunks, name

        handle.visititems(visit)
        assert sorted(names) == sorted(manifest["elements"])
        assert len(names) == 98
        assert handle.attrs[MANIFEST_DIGEST] == digests_of_manifest(handle)
        assert verify(handle)


def digests_of_manifest(handle: h5py.File) -> str:
    """The manifest's own digest, recomputed."""
    from inspector.store._checksum import _digest

    return _digest(handle[MANIFEST])


def test_golden_1_0_has_no_manifest_and_reads_unverified() -> None:
    with h5py.File(GOLDEN_1_0, "r") as handle:
        assert MANIFEST not in handle and MANIFEST_DIGEST not in handle.attrs
        assert verify(handle) is False  # nothing to check: read as before
    assert read_run(GOLDEN_1_0).meta["schema"] == "1.0"
