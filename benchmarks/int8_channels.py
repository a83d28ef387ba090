"""Which channel counts do onnxruntime's INT8 conv kernels want on this CPU? (as the fp32 NCHWc rule was measured)

A stack of six 3×3 convs (C → C, 16×16 input) is quantized (QDQ, per-channel int8 weights, uint8
activations) and timed at each channel count C, next to the same stack in fp32. A kernel that pads to a block
shows a staircase: time flat within a block and jumping at its edge.

    python benchmarks/int8_channels.py --channels 24-72 --batch 32 --threads 1
"""
from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np
import torch
import torch.nn as nn
from _common import machine, write_results

from prunekit.deploy.speed import measure_pair
from prunekit.deploy.export import export_onnx
from prunekit.deploy.quantize import quantize_onnx


def stack(c: int, depth: int = 6) -> nn.Module:
    layers = []
    for _ in range(depth):
        layers += [nn.Conv2d(c, c, 3, padding=1), nn.ReLU()]
    return nn.Sequential(*layers).eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channels", default="24-72")
    ap.add_argument("--size", type=int, default=16)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    lo, hi = map(int, args.channels.split("-"))
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for c in range(lo, hi + 1):
            torch.manual_seed(0)
            fp32, int8 = os.path.join(d, f"c{c}.onnx"), os.path.join(d, f"c{c}.int8.onnx")
            x = torch.randn(8, c, args.size, args.size)
            export_onnx(stack(c), x, fp32, exporter="torchscript")
            quantize_onnx(fp32, int8, x.numpy(), x.numpy())
            st = measure_pair({"fp32": fp32, "int8": int8}, (c, args.size, args.size), args.batch, args.threads,
                              warmup=3, runs=args.runs)
            rows.append({"channels": c, "fp32_ms": st["fp32"].p50_ms, "int8_ms": st["int8"].p50_ms})
            print(f"C={c:3d} fp32 {st['fp32'].p50_ms:7.3f} ms  int8 {st['int8'].p50_ms:7.3f} ms", flush=True)
    base = {r["channels"]: r for r in rows}
    md = [f"Six 3×3 convs C→C at {args.size}×{args.size}, batch {args.batch}, {args.threads} thread(s), onnxruntime "
          "CPU p50 (ms), fp32 and QDQ int8 interleaved; per-MAC time relative to the best count.", "",
          "| C | fp32 ms | int8 ms | fp32 ms per C² (rel.) | int8 ms per C² (rel.) |",
          "| ---: | ---: | ---: | ---: | ---: |"]
    best_f = min(r["fp32_ms"] / r["channels"] ** 2 for r in rows)
    best_i = min(r["int8_ms"] / r["channels"] ** 2 for r in rows)
    for c, r in base.items():
        md.append(f"| {c} | {r['fp32_ms']:.3f} | {r['int8_ms']:.3f} | {r['fp32_ms'] / c ** 2 / best_f:.2f} | "
                  f"{r['int8_ms'] / c ** 2 / best_i:.2f} |")
    md.append(f"\nMachine: {machine()['cpu']}; command: `python benchmarks/{machine()['command']}`")
    write_results(args.out, f"int8_channels-b{args.batch}-t{args.threads}", {"rows": rows, "machine": machine()},
                  "\n".join(md) + "\n")


if __name__ == "__main__":
    np.random.seed(0)
    main()
