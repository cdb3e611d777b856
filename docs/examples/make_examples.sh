#!/usr/bin/env bash
# Regenerate the example reports with two trained ImageNet classifiers, a ViT and a CNN:
# ViT-Ti/16 and MobileOne-S0 (re-parameterized form). Their weights live in
# ../shared/weights (a development sandbox) and are never committed; point W elsewhere
# for your own copies. Run from the repository root with the project's virtualenv.
set -euo pipefail
W=${W:-../shared/weights}
OUT=${OUT:-/tmp/inspector-examples}
mkdir -p "$OUT" docs/examples
.venv/bin/inspector analyze vit_tiny_patch16_224 --weights "$W/vit_tiny_patch16_224.safetensors" \
  --out "$OUT/vit_tiny_trained.h5" --no-report
# MobileOne-S0's file holds the re-parameterized (fused) model: build that form, load the
# weights strictly and hand the module to the API.
.venv/bin/python - "$W/mobileone_s0.safetensors" "$OUT/mobileone_s0_trained.h5" <<'PY'
import sys

import timm
from safetensors.torch import load_file
from timm.utils.model import reparameterize_model

import inspector

model = reparameterize_model(timm.create_model("mobileone_s0", pretrained=False))
model.load_state_dict(load_file(sys.argv[1]), strict=True)
run = inspector.analyze(model.eval(), out=sys.argv[2], report=False)
print(run.summary())
PY
.venv/bin/inspector report "$OUT/vit_tiny_trained.h5" -o docs/examples/vit_tiny_trained.html
.venv/bin/inspector report "$OUT/mobileone_s0_trained.h5" -o docs/examples/mobileone_s0_trained.html
.venv/bin/inspector compare "$OUT/vit_tiny_trained.h5" "$OUT/mobileone_s0_trained.h5" \
  -o docs/examples/compare_vit_tiny_mobileone_s0.html
