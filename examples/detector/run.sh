#!/usr/bin/env bash
# Prune the tiny two-head detector from unlabelled images, recover it by distillation alone, export, bench.
# Usage: examples/detector/run.sh [IMAGE_FOLDER]   (default: 200 generated scenes of coloured boxes)
set -euo pipefail
cd "$(dirname "$0")/../.."
images="${1:-runs/detector-images}"
if [ ! -d "$images" ]; then
  python - "$images" <<'PY'
import os, sys
import numpy as np
from PIL import Image, ImageDraw
out = sys.argv[1]; os.makedirs(out, exist_ok=True); rng = np.random.default_rng(0)
for i in range(200):
    img = Image.new("RGB", (128, 128), tuple(int(c) for c in rng.integers(0, 255, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(rng.integers(1, 4)):
        x, y = rng.integers(0, 96, 2); w, h = rng.integers(16, 48, 2)
        draw.rectangle([int(x), int(y), int(x + w), int(y + h)], fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    img.save(os.path.join(out, f"{i:04d}.png"))
PY
fi
prunekit prune examples/detector/tiny_detector.py:tiny_detector --input-size 3,128,128 --data "$images" \
    --target flops=0.4 --schedule oneshot --finetune-epochs 2 --speed-batches 8 --overwrite --out runs/detector
prunekit export runs/detector --out runs/detector/model.onnx --trust-code
prunekit bench runs/detector --batch-sizes 1,8 --trust-code
