"""The run-file store: one writer, one reader, a versioned schema (docs/run-file.md)."""

from __future__ import annotations

import gc
import json
import shutil
import weakref
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from support import DATA, REPO

import inspector
from inspector import AnalysisNotFoundError, RunFileError
from inspector.analyzers import results_schema_markdown
from inspector.present import describe
from inspector.store import (
    DIM_LABELS,
    ENCODING_TYPE,
    ENCODING_VERSION,
    SCHEMA_VERSION,
    TYPE,
    RunWriter,
    partial_path,
    read_run,
)
from inspector.store._checksum import seal
from inspector.store._encode import write_array

# Model order on purpose differs from HDF5's alphabetical order (blocks.10 < blocks.2).
ORDER = ["blocks.2.attn", "blocks.2.mlp.fc2", "blocks.10.attn"]
GEOMETRY = {"kind": "global", "prefix": 1, "grid": [2, 2], "stride": [16.0, 16.0], "window": None}
FINGERPRINT = json.dumps({"model": "toy", "images": "builtin", "count": 3, "seed": 0})
META = {
    "tool": "inspector",
    "tool_version": "0.0.test",
    "model": "toy",
    "weights_source": "random",
    "weights_reason": "random initialisation requested",
    "input_size": [3, 32, 32],
    "options": {"limit": 3, "layers": None},
    "alternatives": [],
}


def _moments(width: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "count": np.asarray(12, np.int64),
        "mean": rng.normal(size=width),
        "comoment": rng.normal(size=(width, width)),
    }


def _groups(width: int, groups: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "count": np.asarray(12, np.int64),
        "sum": rng.normal(size=width),
        "cross": rng.normal(size=(width, width)),
        "weighted": rng.normal(size=(width, groups)),
        "norms": rng.normal(size=(groups, groups)),
        "shift": rng.normal(size=width),
    }


def _layers(images: int, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Capture state as :meth:`hooks.CaptureState.to_tree` gives it."""
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, Any]] = {}
    for name in ("blocks.10.attn", "blocks.2.attn"):  # not in model order on purpose
        out[name] = {
            "attrs": {
                "kind": "attention",
                "heads": 2,
                "geometry": GEOMETRY,
                "images": images,
                "nonfinite_batches": 0,
            },
            # Per-image rows grow with the images; the first K = 2 maps are kept.
            "summaries": {
                "distance": rng.random((3, 2)).astype(np.float32)[:images],
                "entropy": rng.random((3, 2)).astype(np.float32)[:images],
            },
            "maps": rng.random((2, 2, 5, 5)).astype(np.float16)[:images],
            "moments": _moments(8, rng),
            "groups": _groups(8, 2, rng),
        }
    out["blocks.2.mlp.fc2"] = {
        "attrs": {
            "kind": "channel",
            "channels": 6,
            "site": {"kind": "mlp", "point": "input", "channel_axis": -1},
            "images": images,
            "nonfinite_batches": 0,
        },
        "moments": _moments(6, rng),
        "groups": None,
    }
    return out


IDS = ["a.jpg", "b.jpg", "c.jpg"]
ANALYSIS_TREE = {
    "layers": {
        "blocks.2.attn": {"mean": np.array([10.0, 20.0]), "windowed": False, "images": 3},
        "blocks.10.attn": {"mean": np.array([30.0, 40.0]), "windowed": False, "images": 3},
    },
    "summary": {"curve": (np.linspace(0, 1, 5), ("step",))},
    "notes": {"blocks.2.mlp.fc2": "no heads"},
}


def _write(path: Path, *, finish: bool = True) -> RunWriter:
    writer = RunWriter(path, META, FINGERPRINT)
    writer.checkpoint(_layers(2), IDS[:2], np.array([-1, 3]), batches_done=1, order=ORDER)
    writer.checkpoint(_layers(3), IDS, np.array([-1, 3, 4]), batches_done=2, order=ORDER)
    writer.write_analysis("attention_distance", ANALYSIS_TREE, {"queries": "spatial"}, "1")
    if finish:
        writer.finish()
    else:
        writer.close()
    return writer


@pytest.fixture
def run_path(tmp_path: Path) -> Path:
    path = tmp_path / "toy.h5"
    _write(path)
    return path


def _elements(path: Path) -> list[tuple[str, dict[str, Any], list[str] | None]]:
    """``(name, attrs, dimension labels or None for groups)`` of every element."""
    out: list[tuple[str, dict[str, Any], list[str] | None]] = []
    with h5py.File(path, "r") as handle:
        out.append(("/", dict(handle.attrs), None))

        def visit(name: str, node: h5py.Group | h5py.Dataset) -> None:
            labels = [d.label for d in node.dims] if isinstance(node, h5py.Dataset) else None
            out.append((name, dict(node.attrs), labels))

        handle.visititems(visit)
    return out


def test_round_trip(run_path: Path) -> None:
    run = read_run(run_path)
    assert run.complete
    assert run.path == run_path
    assert run.model == "toy"
    assert run.meta["weights_source"] == "random"
    assert run.meta["input_size"] == [3, 32, 32]  # JSON attributes come back decoded
    assert run.meta["options"] == {"limit": 3, "layers": None}
    assert run.meta["alternatives"] == []
    assert run.meta["fingerprint"] == json.loads(FINGERPRINT)
    assert run.meta["batches_done"] == 2 and run.meta["images_done"] == 3
    assert run.meta["schema"] == SCHEMA_VERSION
    assert run.sample_ids == IDS
    np.testing.assert_array_equal(run.labels, [-1, 3, 4])
    assert list(run.layers) == ORDER
    assert [layer.name for layer in run.attention_layers()] == ["blocks.2.attn", "blocks.10.attn"]
    assert [layer.name for layer in run.channel_layers()] == ["blocks.2.mlp.fc2"]

    expected = _layers(3)
    for name, layer in run.layers.items():
        want = expected[name]
        assert layer.kind == want["attrs"]["kind"]
        assert layer.attrs == {k: v for k, v in want["attrs"].items() if k != "kind"}
        assert set(layer.summaries) == set(want.get("summaries", {}))
        for key, array in want.get("summaries", {}).items():
            np.testing.assert_array_equal(layer.summaries[key], array)
            assert layer.summaries[key].dtype == np.float32
        if want.get("maps") is None:
            assert layer.maps is None
        else:
            assert layer.maps is not None and layer.maps.dtype == np.float16
            np.testing.assert_array_equal(layer.maps, want["maps"])
        for key in ("moments", "groups"):
            state = getattr(layer, key)
            if want[key] is None:
                assert state is None
                continue
            assert set(state) == set(want[key])
            for field, array in want[key].items():
                np.testing.assert_array_equal(state[field], array)

    result = run.analysis["attention_distance"]
    assert result["params"] == {"queries": "spatial"}
    assert result["analyzer_version"] == "1"
    np.testing.assert_array_equal(result["layers"]["blocks.10.attn"]["mean"], [30.0, 40.0])
    assert result["layers"]["blocks.2.attn"]["images"] == 3
    assert result["layers"]["blocks.2.attn"]["windowed"] is False
    np.testing.assert_array_equal(result["summary"]["curve"], np.linspace(0, 1, 5))
    assert result["notes"] == {"blocks.2.mlp.fc2": "no heads"}


def test_every_element_has_encoding_attributes(run_path: Path) -> None:
    elements = _elements(run_path)
    assert len(elements) > 40
    known = set(TYPE.values())
    for name, attrs, _ in elements:
        assert attrs.get(ENCODING_TYPE) in known, name
        assert attrs.get(ENCODING_VERSION) == SCHEMA_VERSION, name
    kinds = {name: attrs[ENCODING_TYPE] for name, attrs, _ in elements}
    assert kinds["/"] == "inspector-run"
    assert kinds["samples"] == "samples"
    assert kinds["samples/ids"] == "string-array"
    assert kinds["layers"] == "layers"
    assert kinds["layers/blocks.2.attn"] == "attention-layer"
    assert kinds["layers/blocks.2.mlp.fc2"] == "channel-layer"
    assert kinds["layers/blocks.2.attn/maps"] == "attention-maps"
    assert kinds["layers/blocks.2.attn/summaries"] == "summaries"
    assert kinds["layers/blocks.2.attn/moments"] == "moments"
    assert kinds["layers/blocks.2.attn/groups"] == "group-sums"
    assert kinds["analysis"] == "analysis"
    assert kinds["analysis/attention_distance"] == "analysis-result"
    assert kinds["analysis/attention_distance/layers"] == "dict"


def test_dimension_labels(run_path: Path) -> None:
    labels = {name: dims for name, _, dims in _elements(run_path) if dims is not None}
    assert labels["samples/ids"] == ["sample"]
    assert labels["samples/labels"] == ["sample"]
    assert labels["layers/blocks.10.attn/summaries/distance"] == ["sample", "head"]
    assert labels["layers/blocks.10.attn/maps"] == ["sample", "head", "query", "key"]
    assert labels["layers/blocks.10.attn/moments/mean"] == ["feature"]
    assert labels["layers/blocks.10.attn/moments/comoment"] == ["feature", "feature"]
    assert labels["layers/blocks.10.attn/moments/count"] == []
    assert labels["layers/blocks.10.attn/groups/weighted"] == ["feature", "group"]
    assert labels["layers/blocks.10.attn/groups/norms"] == ["group", "group"]
    assert labels["analysis/attention_distance/summary/curve"] == ["step"]
    for name, dims in labels.items():
        if name.startswith(("samples", "layers")):
            assert all(dims), f"{name} has an unlabelled axis: {dims}"
        assert set(filter(None, dims)) <= set(DIM_LABELS), name


def test_layer_order_attribute(run_path: Path) -> None:
    with h5py.File(run_path, "r") as handle:
        assert list(handle["layers"]) == ["blocks.10.attn", "blocks.2.attn", "blocks.2.mlp.fc2"]
        assert json.loads(handle["layers"].attrs["order"]) == ORDER


def test_maps_are_chunked_and_compressed(run_path: Path) -> None:
    with h5py.File(run_path, "r") as handle:
        maps = handle["layers/blocks.2.attn/maps"]
        assert maps.dtype == np.float16
        assert maps.compression == "gzip" and maps.shuffle
        assert maps.chunks == (1, 1, 5, 5)  # one attention map per chunk


def test_nothing_at_the_final_path_until_finish(tmp_path: Path) -> None:
    path = tmp_path / "toy.h5"
    writer = _write(path, finish=False)
    assert not path.exists()
    assert writer.partial == partial_path(path) == tmp_path / "toy.h5.partial"
    assert writer.partial.exists()
    with h5py.File(writer.partial, "r") as handle:
        assert not handle.attrs["complete"]
        assert handle.attrs["batches_done"] == 2


def test_finish_lets_the_staged_state_go(tmp_path: Path) -> None:
    """Staged state is the capture's own sums (views, not copies): once the complete
    file is written the writer holds none of it, so the caller can free them before
    reading the file back."""
    writer = RunWriter(tmp_path / "toy.h5", META, FINGERPRINT)
    layers = _layers(3)
    cross = weakref.ref(layers["blocks.2.attn"]["groups"]["cross"])
    writer.stage(layers, IDS, np.array([-1, 3, 4]), batches_done=2, order=ORDER)
    writer.finish()
    del layers
    gc.collect()
    assert cross() is None
    assert read_run(tmp_path / "toy.h5").layers["blocks.2.attn"].groups is not None


def test_incomplete_file_refused_unless_allowed(tmp_path: Path) -> None:
    path = tmp_path / "toy.h5"
    _write(path, finish=False)
    with pytest.raises(RunFileError, match=r"incomplete run \(3 images done\).*--resume"):
        read_run(partial_path(path))
    run = read_run(partial_path(path), allow_incomplete=True)
    assert not run.complete
    assert run.sample_ids == IDS
    assert list(run.layers) == ORDER


def test_missing_final_file_points_at_its_partial(tmp_path: Path) -> None:
    path = tmp_path / "toy.h5"
    with pytest.raises(RunFileError, match="no run file at"):
        read_run(path)
    _write(path, finish=False)
    with pytest.raises(RunFileError, match=r"toy\.h5\.partial holds an unfinished run"):
        read_run(path)


def test_resume_continues_the_partial_file(tmp_path: Path) -> None:
    path = tmp_path / "toy.h5"
    _write(path, finish=False)
    writer = RunWriter(path, META, FINGERPRINT, resume=True)
    assert writer.resumed
    assert writer.batches_done == 2 and writer.images_done == 3
    writer.finish()
    assert read_run(path).sample_ids == IDS
    assert not partial_path(path).exists()


def test_resume_with_other_settings_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "toy.h5"
    _write(path, finish=False)
    other = json.dumps({**json.loads(FINGERPRINT), "seed": 1})
    with pytest.raises(RunFileError, match=r"other settings \(seed: 0 -> 1\)"):
        RunWriter(path, META, other, resume=True)
    assert partial_path(path).exists()  # kept for a resume with the right settings


def test_without_resume_a_partial_file_is_started_over(tmp_path: Path) -> None:
    path = tmp_path / "toy.h5"
    _write(path, finish=False)
    writer = RunWriter(path, META, FINGERPRINT)
    assert not writer.resumed and writer.batches_done == 0
    writer.close()


def test_checkpoints_overwrite_in_place(tmp_path: Path) -> None:
    """Rewriting the accumulators at every checkpoint must not grow the file."""
    path = tmp_path / "big.h5"
    writer = RunWriter(path, META, FINGERPRINT)
    rng = np.random.default_rng(0)
    layer = {"attrs": {"kind": "channel", "channels": 256, "images": 1}}
    sizes = []
    for batch in range(1, 6):
        state = {**layer, "moments": _moments(256, rng)}
        writer.checkpoint({"fc": state}, IDS[:1], np.array([-1]), batches_done=batch, order=["fc"])
        sizes.append(writer.partial.stat().st_size)
    writer.close()
    assert sizes[-1] - sizes[0] < 256 * 256 * 8 // 4, sizes


def test_newer_major_schema_refused(run_path: Path) -> None:
    with h5py.File(run_path, "r+") as handle:
        handle.attrs[ENCODING_VERSION] = "2.0"
    with pytest.raises(RunFileError, match=r"schema 2\.0, newer than .* upgrade inspector"):
        read_run(run_path)


def test_newer_minor_schema_read(run_path: Path) -> None:
    with h5py.File(run_path, "r+") as handle:
        handle.attrs[ENCODING_VERSION] = "1.9"
        seal(handle)  # a newer writer's file: its manifest matches
    assert read_run(run_path).model == "toy"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_text("not hdf5 at all\n"), "not a readable HDF5 file"),
        (lambda p: h5py.File(p, "w").close(), "HDF5 file but not an inspector run file"),
        (lambda p: p.mkdir(), "is a folder, not a run file"),
    ],
    ids=["text", "plain-hdf5", "folder"],
)
def test_not_a_run_file(tmp_path: Path, make: Any, message: str) -> None:
    path = tmp_path / "x.h5"
    make(path)
    with pytest.raises(RunFileError, match=message) as info:
        read_run(path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_truncated_file(run_path: Path, fraction: float) -> None:
    data = run_path.read_bytes()
    run_path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(RunFileError) as info:
        read_run(run_path)
    assert "\n" not in str(info.value)
    assert str(run_path) in str(info.value)


def test_writer_refuses_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(RunFileError, match="does not exist"):
        RunWriter(tmp_path / "nope" / "toy.h5", META, FINGERPRINT)


def test_dimension_labels_must_match_rank(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "x.h5", "w") as handle, pytest.raises(ValueError, match="2-d"):
        write_array(handle, "a", np.zeros((2, 3)), ("sample",))


GOLDEN = DATA / "golden-run-1.0.h5"


def test_result_of_a_newer_analyzer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "newer.h5"
    shutil.copy(GOLDEN, path)
    with h5py.File(path, "r+") as handle:
        handle["analysis/pruning_curve"].attrs["analyzer_version"] = "3"
    run = inspector.open_run(path)
    with pytest.raises(RunFileError) as info:
        run.result("pruning_curve")
    message = str(info.value)
    assert "\n" not in message
    assert "analyzer version 3" in message and "this inspector's 2" in message
    assert "upgrade inspector" in message
    assert run.result("importance").layers  # the other analyses still read
    assert run.analysis["pruning_curve"]["summary"]["heads"]["units"] == 2  # raw tree too
    info = describe(path)  # `inspector info` says which one and why
    assert "\n           analysis 'pruning_curve' was written by analyzer version 3" in info


def test_missing_analysis_lists_what_the_run_holds(run_path: Path) -> None:
    run = inspector.open_run(run_path)
    with pytest.raises(AnalysisNotFoundError, match="holds no 'receptive_field' analysis") as info:
        run.result("receptive_field")
    assert str(info.value).endswith("it holds: attention_distance")
    assert isinstance(info.value, RunFileError) and isinstance(info.value, LookupError)
    with pytest.raises(AnalysisNotFoundError, match="analyzers: attention_distance, "):
        run.result("distance")  # not an analyzer at all: the registered names are listed


def test_result_tree_that_does_not_match_its_dataclass_is_a_run_file_error(
    run_path: Path,
) -> None:
    run = inspector.open_run(run_path)  # its attention_distance tree is a toy one
    with pytest.raises(RunFileError, match="does not match its schema"):
        run.result("attention_distance")


def test_run_file_doc_lists_the_current_result_schemas() -> None:
    text = (REPO / "docs" / "run-file.md").read_text("utf-8")
    section = text.split("<!-- results:begin -->")[1].split("<!-- results:end -->")[0]
    assert section == "\n" + results_schema_markdown() + "\n", (
        "docs/run-file.md is out of date: run .venv/bin/python docs/make_results_schema.py"
    )
