#!/usr/bin/env bash
# CI size gate with prunekit check. Usage: examples/ci/check_model.sh MODEL.onnx BASELINE.json [DENSE.onnx]
# Exit 0: within budget; 1: the model grew (or is not fast enough); 2: usage error.
# First time: prunekit check MODEL.onnx --write-baseline BASELINE.json, and commit the baseline.
set -euo pipefail
model=$1
baseline=$2
dense=${3:-}
args=(--baseline "$baseline" --tolerance 1% --markdown prunekit-check.md)
if [ -n "$dense" ]; then
  # latency only as a ratio against a reference measured in the same run: absolute times on CI are noise
  args+=(--vs "$dense" --min-speedup 1.3)
fi
prunekit check "$model" "${args[@]}"
