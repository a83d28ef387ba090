#!/usr/bin/env bash
# Prune a torchvision model on your own ImageFolder dataset (DATA/train/<class>/*.jpg, DATA/test/<class>/*.jpg)
# with your fine-tuned weights (a state dict whose classifier has your number of classes).
# Usage: examples/imagefolder_torchvision.sh DATA WEIGHTS.pt
set -euo pipefail
data=$1
weights=$2
prunekit prune torchvision:mobilenet_v2 --weights "$weights" --data "$data" --input-size 3,224,224 \
    --target flops=0.4 --budget-epochs 4 --max-rounds 10 --batch-size 64 --out runs/mbv2-f40
prunekit export runs/mbv2-f40 --out runs/mbv2-f40/model.onnx
prunekit bench runs/mbv2-f40 --batch-sizes 1,16
