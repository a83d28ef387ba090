"""Does pruning make models faster where they ship? Dense vs pruned in onnxruntime (CPU), interleaved.

For each model and target, prune one-shot with ``--round-to 1`` (no alignment) and ``--round-to auto`` (the
CPU's NCHWc block), export dense and pruned with prunekit's exporter, check which Convs run on onnxruntime's
NCHWc kernels, and time both models interleaved at each batch size and thread count. Speedup = dense p50 /
pruned p50; efficiency = speedup / MAC ratio (1.0: every removed MAC turned into time).

    python benchmarks/speedup.py                      # the full table (about 15 min on 2 cores)
    python benchmarks/speedup.py --quick              # ResNet-56 only, fewer runs
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torch
from _common import machine, shared, write_results

import prunekit
from prunekit.deploy.speed import measure_pair, onnx_info
from prunekit.deploy.export import export_onnx
from prunekit.deploy.fastpath import fast_path
from prunekit.models import resolve_model
from prunekit.deploy.quantize import quantize_onnx

CASES = [  # (model, weights, data, input size, target)
    ("resnet56", "resnet56-cifar10jpeg.pt", "cifar", (3, 32, 32), "flops=0.5"),
    ("resnet56", "resnet56-cifar10jpeg.pt", "cifar", (3, 32, 32), "flops=0.7"),
    ("torchvision:resnet18", None, "random", (3, 224, 224), "flops=0.5"),
    ("torchvision:resnet50", None, "random", (3, 224, 224), "flops=0.5"),
    ("torchvision:mobilenet_v2", None, "random", (3, 224, 224), "flops=0.5"),
]


def prune_or_none(cfg):
    try:
        return prunekit.prune(cfg)
    except prunekit.PrunekitError as e:
        print(f"{cfg.model} {cfg.target} --round-to {cfg.round_to}: {e}", file=sys.stderr)
        return None


def timed(paths, size, batch, threads, budget_s):
    probe = measure_pair(paths, size, batch, threads, warmup=1, runs=1)
    per = sum(s.p50_ms for s in probe.values()) / 1000
    runs = int(min(100, max(7, budget_s / max(per, 1e-6))))
    return measure_pair(paths, size, batch, threads, warmup=max(2, runs // 10), runs=runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--round-to", default="1,auto")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--budget-s", type=float, default=4.0, help="timing budget per (model, batch, threads) cell")
    ap.add_argument("--quick", action="store_true", help="ResNet-56 only, 1.5 s per cell")
    ap.add_argument("--models", default=None, help="comma-separated subset of the case models")
    ap.add_argument("--no-int8", dest="int8", action="store_false",
                    help="skip the INT8 columns (dense and pruned quantized, all four timed interleaved)")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    cases = [c for c in CASES if (not args.quick or c[0] == "resnet56")
             and (not args.models or c[0] in args.models.split(","))]
    budget = 1.5 if args.quick else args.budget_s
    threads = [int(t) for t in args.threads.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="prunekit-speedup-") as d:
        for model, weights, data, size, target in cases:
            w = shared("weights", weights) if weights else None
            dense, spec = resolve_model(model, weights=w, input_size=size)
            x = torch.randn(4, *size)
            dense_path = os.path.join(d, f"{model.replace(':', '_')}-dense.onnx")
            if not os.path.exists(dense_path):
                export_onnx(dense, x, dense_path)
                if args.int8:  # calibration values do not change the time
                    calib = torch.randn(32, *size).numpy()
                    quantize_onnx(dense_path, dense_path[:-5] + ".int8.onnx", calib, calib[:4])
            for rt in args.round_to.split(","):
                out = os.path.join(d, f"{model.replace(':', '_')}-{target}-{rt}")
                t0 = time.perf_counter()
                run = prune_or_none(prunekit.PruneConfig(
                    model=model, weights=w, data=shared("data", "cifar10-jpeg.tar.gz") if data == "cifar" else "random",
                    target=target, out=out, schedule="oneshot", input_size=size, round_to=rt, calib_images=128,
                    batch_size=32, speed_batches=(), eval_images=16))
                prune_s = time.perf_counter() - t0
                if run is None:
                    continue
                pruned_path = os.path.join(out, "model.onnx")
                export_onnx(prunekit.load(out), x, pruned_path)
                paths = {"dense": dense_path, "pruned": pruned_path}
                if args.int8:
                    calib = torch.randn(32, *size).numpy()
                    quantize_onnx(pruned_path, pruned_path[:-5] + ".int8.onnx", calib, calib[:4])
                    paths.update({"dense-int8": dense_path[:-5] + ".int8.onnx",
                                  "pruned-int8": pruned_path[:-5] + ".int8.onnx"})
                info = {k: onnx_info(p) for k, p in (("dense", dense_path), ("pruned", pruned_path))}
                fp = {k: fast_path(p) for k, p in (("dense", dense_path), ("pruned", pruned_path))}
                mac_ratio = info["dense"]["macs"] / info["pruned"]["macs"]
                for th in threads:
                    for b in batches:
                        st = timed(paths, size, b, th, budget)
                        sp = st["dense"].p50_ms / st["pruned"].p50_ms
                        row = {"model": model, "target": target, "round_to": rt,
                               "resolved_round_to": run["alignment"]["round_to"],
                               "alignment": run["alignment"]["detected"],
                               "macs_reduction": run["reduction"]["macs"], "mac_ratio": mac_ratio,
                               "threads": th, "batch": b, "dense_ms": st["dense"].p50_ms,
                               "pruned_ms": st["pruned"].p50_ms, "runs": st["dense"].runs, "speedup": sp,
                               "efficiency": sp / mac_ratio,
                               "nchwc": f"{fp['pruned'].nchwc_convs}/{fp['pruned'].convs}",
                               "dense_nchwc": f"{fp['dense'].nchwc_convs}/{fp['dense'].convs}",
                               "prune_s": prune_s}
                        if args.int8:
                            d8, p8 = st["dense-int8"].p50_ms, st["pruned-int8"].p50_ms
                            row.update({"dense_int8_ms": d8, "pruned_int8_ms": p8, "int8_speedup": d8 / p8,
                                        "int8_efficiency": d8 / p8 / mac_ratio,
                                        "pruned_int8_vs_dense": st["dense"].p50_ms / p8})
                        rows.append(row)
                        print(f"{model:<26} {target:<10} round-to {rt:<5} t{th} b{b:<3} dense {row['dense_ms']:8.2f} ms"
                              f"  pruned {row['pruned_ms']:8.2f} ms  {sp:.2f}×  eff {row['efficiency']:.2f}  "
                              f"NCHWc {row['nchwc']}", file=sys.stderr, flush=True)
    md = ["onnxruntime CPU, p50 latency in ms, dense and pruned interleaved in one process (intra-op spinning "
          "off); MAC ratio = dense MACs / pruned MACs (ONNX count); efficiency = speedup / MAC ratio; NCHWc = "
          "Convs on onnxruntime's blocked kernels in the pruned model. One-shot attention-mean pruning.", "",
          "INT8 columns: dense and pruned quantized (onnxruntime static QDQ, per-channel), timed in the same "
          "interleaved run; int8 speedup = dense int8 / pruned int8, its efficiency against the same MAC ratio.", "",
          "| model | target | --round-to | MACs ↓ | threads | batch | dense ms | pruned ms | speedup | efficiency "
          "| NCHWc | dense int8 ms | pruned int8 ms | int8 speedup | int8 efficiency |",
          "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |"]
    for r in rows:
        rt = r["round_to"] if r["round_to"] != "auto" else f"auto ({r['resolved_round_to']})"
        slow = " (slower)" if r["speedup"] < 1 else ""
        md.append(f"| {r['model']} | {r['target']} | {rt} | {r['macs_reduction']:.1%} | {r['threads']} | {r['batch']} "
                  f"| {r['dense_ms']:.2f} | {r['pruned_ms']:.2f} | {r['speedup']:.2f}×{slow} | {r['efficiency']:.2f} "
                  f"| {r['nchwc']} | " + (f"{r['dense_int8_ms']:.2f} | {r['pruned_int8_ms']:.2f} | "
                                          f"{r['int8_speedup']:.2f}× | {r['int8_efficiency']:.2f} |"
                                          if "dense_int8_ms" in r else "– | – | – | – |"))
    m = machine()
    md.append(f"\nMachine: {m['cpu']}, {m['cores']} cores, onnxruntime {m['onnxruntime']}, torch {m['torch']}, "
              f"commit {m['commit']}. Command: `python benchmarks/{m['command']}`")
    write_results(args.out, "speedup" + ("-quick" if args.quick else ""), {"rows": rows, "machine": m},
                  "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
