"""The whole main job on CUDA equals the same job on the CPU (skipped without a GPU).

The gradient passes build their gates, masks and targets from tensors that may live on
either device; only a run on a GPU shows one left on the CPU.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import timm
import torch

from inspector import AnalyzeOptions, analyze
from inspector.present import failed_analyses

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _run(model: torch.nn.Module, tmp_path, device: str):
    options = AnalyzeOptions(limit=4, batch_size=2, device=device, report=False, progress=False)
    out = tmp_path / f"{device}.h5"
    return analyze(copy.deepcopy(model), out=out, options=options, name="vit_tiny")


def test_every_default_analysis_runs_on_cuda_and_matches_the_cpu(tmp_path) -> None:
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False).eval()
    cuda = _run(model, tmp_path, "cuda")
    cpu = _run(model, tmp_path, "cpu")
    assert failed_analyses(cuda) == {}
    assert set(cuda.analysis) == set(cpu.analysis)
    gpu_erf, cpu_erf = cuda.result("receptive_field"), cpu.result("receptive_field")
    for name, layer in cpu_erf.layers.items():
        # TF32/cuDNN kernels differ from the CPU's in the last bits only
        got = gpu_erf.layers[name].mean_distance
        np.testing.assert_allclose(got, layer.mean_distance, rtol=1e-2)
    gpu_d, cpu_d = cuda.result("attention_distance"), cpu.result("attention_distance")
    for name, layer in cpu_d.layers.items():
        np.testing.assert_allclose(gpu_d.layers[name].mean, layer.mean, rtol=1e-3)
