#!/usr/bin/env bash
# Prune the shared CIFAR-10 ResNet-56 to half its FLOPs (adaptive search, small budget), then benchmark it
# against the dense model. Run from the repository root with ../shared beside it.
set -euo pipefail
export PRUNEKIT_DATA=${PRUNEKIT_DATA:-../shared/data}
prunekit prune resnet56 --weights ../shared/weights/resnet56-cifar10jpeg.pt --data cifar10 \
    --target flops=0.5 --budget-epochs 1 --train-fraction 0.25 --max-rounds 8 \
    --out runs/r56-f50 --overwrite
prunekit bench runs/r56-f50 --batch-sizes 1,32
