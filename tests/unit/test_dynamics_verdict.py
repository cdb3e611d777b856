"""The verdict's sentences on fixed vs dynamic interaction and equivariance, from typed
results built by hand."""

from __future__ import annotations

import math

import numpy as np

from inspector.analyzers import (
    EquivarianceLayer,
    EquivarianceResult,
    InputDependenceLayer,
    InputDependenceResult,
)
from inspector.present import dynamics_verdict_lines


def dependence(heads: float, erf: float) -> InputDependenceResult:
    layers = {
        "blocks.0.attn": InputDependenceLayer(
            heads=np.full(3, heads),
            heads_low=np.full(3, heads),
            heads_high=np.full(3, heads),
            heads_normalised=np.full(3, heads / math.log(9)),
            head_images=9,
            head_keys=196,
            head_groups=9,
            branch="attention",
        ),
        "blocks.0": InputDependenceLayer(
            erf=erf,
            erf_low=erf,
            erf_high=erf,
            erf_normalised=erf / math.log(9),
            erf_images=9,
            branch="block",
        ),
    }
    return InputDependenceResult(version="1", layers=layers)


def equivariance(values: list[float]) -> EquivarianceResult:
    layers = {
        f"stages.{i}": EquivarianceLayer(
            equivariance=v,
            low=v - 0.001,
            high=min(1.0, v + 0.001),
            sub=v - 0.1,
            sub_low=v - 0.11,
            sub_high=v - 0.09,
            unaligned=0.5,
            stride=16.0,
            shift=16,
            sub_shift=8,
            margin=3,
            margin_source="test",
            cells=64,
            images=9,
        )
        for i, v in enumerate(values)
    }
    return EquivarianceResult(version="1", layers=layers)


def test_fixed_and_input_dependent_interaction() -> None:
    fixed = dynamics_verdict_lines({"input_dependence": dependence(0.0, 0.0)})
    assert fixed[0].startswith("Interaction is fixed: in the attention heads (D median 0.00")
    dynamic = dynamics_verdict_lines({"input_dependence": dependence(0.5, 0.4)})
    assert dynamic[0].startswith("Interaction is input-dependent: in the attention heads")
    assert "9 images" in dynamic[0]
    mixed = dynamics_verdict_lines({"input_dependence": dependence(0.5, 0.0)})
    assert mixed[0].startswith("Interaction is input-dependent in the attention heads")
    assert "; fixed in the blocks' ERF maps" in mixed[0]


def test_equivariant_up_to_the_last_layer_that_passes() -> None:
    (line,) = dynamics_verdict_lines({"translation_equivariance": equivariance([1, 1, 0.9, 1])})
    assert line.startswith("Equivariant up to stages.1 (2 of 4 layers): stages.2 has E = 0.900")
    (line,) = dynamics_verdict_lines({"translation_equivariance": equivariance([1, 1])})
    assert line.startswith("Translation equivariant at every measured layer")
    (line,) = dynamics_verdict_lines({"translation_equivariance": equivariance([0.9])})
    assert line.startswith("Not translation equivariant from the first measured layer")
    assert dynamics_verdict_lines({}) == []


def test_the_run_verdict_closes_with_the_dynamics_sentences() -> None:
    """One verdict: ``present._verdict.verdict`` (terminal and reports) carries them."""
    from inspector.present._rows import RunResults
    from inspector.present._verdict import compare_verdict, verdict

    empty = dict.fromkeys(
        ("distance", "entropy", "erf", "heads", "channels", "importance", "pruning")
    )
    results = RunResults(
        **empty, dependence=dependence(0.5, 0.4), equivariance=equivariance([1, 0.9])
    )
    answer = verdict(results, 9)
    assert answer.overall == "No redundancy was measured."
    assert answer.dynamics == tuple(
        dynamics_verdict_lines(
            {
                "input_dependence": dependence(0.5, 0.4),
                "translation_equivariance": equivariance([1, 0.9]),
            }
        )
    )
    assert answer.dynamics[0].startswith("Interaction is input-dependent")
    assert answer.dynamics[1].startswith("Equivariant up to stages.0")
    assert verdict(RunResults(**empty), 9).dynamics == ()
    lines = compare_verdict([("a", results, 9)])
    assert lines[1:] == tuple(f"a: {line}" for line in answer.dynamics)


def test_heads_without_a_number_are_left_out_of_the_sentence() -> None:
    """Non-finite attention (NaN D for every head) gives no heads clause, not a
    'input-dependent ... D median nan' one."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lines = dynamics_verdict_lines({"input_dependence": dependence(math.nan, 0.0)})
    assert lines == [lines[0]] and lines[0].startswith("Interaction is fixed: in the blocks'")
    assert "attention heads" not in lines[0]
