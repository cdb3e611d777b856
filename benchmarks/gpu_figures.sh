#!/usr/bin/env bash
# GPU figures for docs/performance.md: the capture-pass ratio and images/s at batch 64,
# with and without autocast, then end-to-end `inspector analyze` runs on CUDA.
# Usage: bash benchmarks/gpu_figures.sh OUT_DIR [WEIGHTS_DIR]
# (WEIGHTS_DIR holds the trained vit_tiny/mobileone_s0 files; those runs skip without it.)
set -uo pipefail
out=${1:?usage: gpu_figures.sh OUT_DIR [WEIGHTS_DIR]}
weights=${2:-}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
py=${PYTHON:-python3}
nvidia-smi -L | tee "$out/machine.txt"
$py -c "import torch, timm, h5py; print('torch', torch.__version__, 'timm', timm.__version__, 'h5py', h5py.__version__)" | tee -a "$out/machine.txt"
models=deit_small_patch16_224,vit_base_patch16_224
for mode in "" "--autocast"; do
  name=overhead${mode:+_autocast}
  $py benchmarks/capture_overhead.py --device cuda --batch 64 --repeats 10 --no-peers \
    --models $models $mode >"$out/$name.txt" 2>"$out/$name.log"
  echo "$name: exit $?"; cat "$out/$name.txt"
done
$py benchmarks/augmented_images.py /tmp/aug1000 --count 1000
run() {  # name, then analyze's arguments; wall time and exit status into e2e.txt
  local name=$1; shift
  local began=$SECONDS
  $py -m inspector analyze "$@" --device cuda --out "/tmp/runs/$name.h5" --overwrite \
    >"$out/$name.log" 2>&1
  echo "$name: exit $?, $((SECONDS - began)) s wall: $*" | tee -a "$out/e2e.txt"
}
run deit_small_1000 deit_small --images /tmp/aug1000 --batch-size 64 --no-report
run deit_small_1000_autocast deit_small --images /tmp/aug1000 --batch-size 64 --autocast --no-report
run vit_base_1000 vit_base_patch16_224 --images /tmp/aug1000 --batch-size 64 --no-report
run swin_tiny swin_tiny --limit 4
run resnet50 resnet50 --limit 4
if [ -n "$weights" ]; then
  run vit_tiny_trained vit_tiny_patch16_224 --weights "$weights/vit_tiny_patch16_224.safetensors"
  run mobileone_trained mobileone_s0 --weights "$weights/mobileone_s0.safetensors"
fi
