#!/usr/bin/env bash
# Regenerate the example reports (needs ../shared/weights, the trained ViT-Ti, which is
# never committed). Run from the repository root with the project's virtualenv.
set -euo pipefail
W=../shared/weights/vit_tiny_patch16_224.safetensors
OUT=${OUT:-/tmp/inspector-examples}
mkdir -p "$OUT" docs/examples
.venv/bin/inspector analyze vit_tiny_patch16_224 --weights "$W" --out "$OUT/vit_tiny_trained.h5" --quiet
.venv/bin/inspector analyze vit_tiny_patch16_224 --weights random --out "$OUT/vit_tiny_random.h5" --quiet
.venv/bin/inspector analyze resnet18 --out "$OUT/resnet18.h5" --quiet   # auto: random when offline
cp "$OUT/vit_tiny_trained.html" docs/examples/vit_tiny_trained.html
.venv/bin/inspector compare "$OUT/vit_tiny_trained.h5" "$OUT/vit_tiny_random.h5" "$OUT/resnet18.h5" \
  -o docs/examples/compare_trained_random_resnet18.html
