"""Tables of a run for pandas (``Run.to_dataframe``), ``inspector export``, the short
reprs, the notebook view, ``Run.summary`` and ``open_run`` without torch."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

import inspector
from inspector.analyzers import DistanceLayer
from inspector.cli import main


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> inspector.Run:
    out = tmp_path_factory.mktemp("tables")
    return inspector.analyze(
        "test_vit", weights="random", limit=4, batch_size=4, out=out, report=False, progress=False
    )


def test_heads_table_has_every_declared_head_field_and_the_stored_values(
    run: inspector.Run,
) -> None:
    pytest.importorskip("pandas")
    frame = run.to_dataframe("heads")
    heads = sum(int(layer.attrs["heads"]) for layer in run.attention_layers)
    assert list(frame.index.names) == ["layer", "head"] and len(frame) == heads
    # generic: every array field declared along ``head`` is a column, no list kept here
    declared = [f.name for f in fields(DistanceLayer) if f.metadata.get("dims") == ("head",)]
    assert declared and all(f"attention_distance.{name}" in frame for name in declared)
    for column in ("attention_entropy.mean", "importance.normalised", "locality"):
        assert column in frame
    distance = run.result("attention_distance").layers["blocks.2.attn"]
    got = frame.loc["blocks.2.attn", "attention_distance.mean"].to_numpy()
    np.testing.assert_array_equal(got, distance.mean)
    fraction = frame.loc["blocks.2.attn", "attention_distance.fraction_of_uniform"].to_numpy()
    np.testing.assert_allclose(fraction, distance.mean / distance.uniform)
    assert set(frame["locality"]) <= {"local", "mixed", "global"}


def test_tables_carry_the_interval_fields(run: inspector.Run) -> None:
    """MAD_centre with its interval, the distance interval (heads), the CKA interval of
    heads and of channel groups, the ERF intervals (layers), agreement intervals (pruning):
    all from the declarations, none listed in ``_frames``."""
    pytest.importorskip("pandas")
    heads = run.to_dataframe("heads")
    for column in ("centre_mean", "centre_low", "centre_high", "mean_low", "mean_high"):
        assert f"attention_distance.{column}" in heads
    centre = run.result("attention_distance").layers["blocks.1.attn"]
    assert centre.centre_low is not None
    np.testing.assert_array_equal(
        heads.loc["blocks.1.attn", "attention_distance.centre_low"].to_numpy(), centre.centre_low
    )
    layers = run.to_dataframe("layers")
    for column in (
        "head_redundancy.redundancy_low",
        "head_redundancy.redundancy_high",
        "channel_redundancy.grouped.redundancy_low",
        "receptive_field.mean_distance_low",
        "receptive_field.radius_90_high",
        "receptive_field.theoretical_rf",
    ):
        assert column in layers
    stats = run.result("head_redundancy").layers["blocks.0.attn"]
    assert layers.loc["blocks.0.attn", "head_redundancy.redundancy_low"] == pytest.approx(
        stats.redundancy_low, nan_ok=True
    )
    assert "pruning_curve.agreement_low" in run.to_dataframe("pruning")


def test_layers_units_and_pruning_tables(run: inspector.Run) -> None:
    pytest.importorskip("pandas")
    layers = run.to_dataframe("layers")
    assert list(layers.index[: len(run.layers)]) == list(run.layers)
    erf = run.result("receptive_field").layers
    assert layers.loc["blocks.1.attn", "receptive_field.mean_distance"] == pytest.approx(
        erf["blocks.1.attn"].mean_distance
    )
    units = run.to_dataframe("units")
    channels = run.layers["blocks.0.mlp.fc2"].attrs["channels"]
    assert len(units.loc["blocks.0.mlp.fc2"]) == channels
    pruning = run.to_dataframe("pruning")
    curve = run.result("pruning_curve").summary["heads"]
    rows = pruning[pruning["kind"] == "heads"]
    np.testing.assert_array_equal(rows["pruning_curve.agreement"], curve.agreement)


def test_to_dataframe_refuses_unknown_table_and_missing_pandas(
    run: inspector.Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(inspector.InspectorError, match="choose one of: heads, units"):
        run.to_dataframe("nope")
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(inspector.InspectorError, match=r"pip install 'inspector\[pandas\]'"):
        run.to_dataframe("heads")


def test_short_reprs_summary_and_notebook_view(run: inspector.Run) -> None:
    text = repr(run)
    assert len(text) < 400 and "test_vit" in text and "images=4" in text
    assert len(repr(run.layers["blocks.0.attn"])) < 120
    assert run.attention_layers == run.attention_layers()  # property, still callable
    assert len(run.channel_layers) == 7
    summary = run.summary()
    assert "model:    test_vit" in summary and "blocks.3.attn" in summary
    assert "MAD: mean attention distance" in summary
    page = run._repr_html_()
    assert "<table>" in page and "blocks.3.attn" in page and "<script" not in page


def test_open_run_imports_neither_torch_nor_timm(run: inspector.Run) -> None:
    code = (
        "import sys, inspector; r = inspector.open_run(sys.argv[1]); "
        "print(len(r.layers), 'torch' in sys.modules, 'timm' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(run.path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(len(run.layers)), "False", "False"]


def test_export_csv_json_parquet(
    run: inspector.Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", str(run.path), "--format", "csv", "-o", str(tmp_path)]) == 0
    stem = run.path.stem
    for table in ("heads", "units", "layers", "pruning"):
        assert (tmp_path / f"{stem}.{table}.csv").exists()
    with (tmp_path / f"{stem}.heads.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    distance = run.result("attention_distance").layers["blocks.0.attn"].mean
    first = [r for r in rows if r["layer"] == "blocks.0.attn"]
    assert [float(r["attention_distance.mean"]) for r in first] == pytest.approx(distance)
    assert main(["export", str(run.path), "--format", "json", "--table", "layers",
                 "-o", str(tmp_path)]) == 0  # fmt: skip
    data = json.loads((tmp_path / f"{stem}.layers.json").read_text())
    assert all(not (isinstance(v, float) and math.isnan(v)) for r in data for v in r.values())
    assert "wrote" in capsys.readouterr().out
    pandas = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    assert main(["export", str(run.path), "--format", "parquet", "--table", "heads",
                 "-o", str(tmp_path)]) == 0  # fmt: skip
    back = pandas.read_parquet(tmp_path / f"{stem}.heads.parquet")
    assert len(back) == len(run.to_dataframe("heads"))


def test_report_has_the_per_head_table(run: inspector.Run) -> None:
    from inspector.present import run_view

    view = run_view(run)
    table = next(t for t in view.tables if t.name == "per-head numbers")
    heads = sum(int(layer.attrs["heads"]) for layer in run.attention_layers)
    assert len(table.rows) == heads
    assert {"layer", "head", "attention_distance.mean", "locality"} <= set(table.columns)
    at = table.columns.index("attention_distance.mean")
    first = run.result("attention_distance").layers["blocks.0.attn"].mean
    assert [r[at] for r in table.rows[: first.size]] == pytest.approx(first)
