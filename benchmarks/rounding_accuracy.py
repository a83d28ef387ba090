"""The accuracy cost of aligned channel counts: ResNet-56 (shared weights) one-shot to a target, fine-tuned,
with --round-to 1 vs --round-to auto, test accuracy on the full test split, and the ONNX speedup of each.

    python benchmarks/rounding_accuracy.py --target flops=0.5 --finetune-epochs 1 --out benchmarks/results
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch
from _common import machine, shared, write_results

import prunekit
from prunekit.progress import configure


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet56")
    ap.add_argument("--target", default="flops=0.5")
    ap.add_argument("--finetune-epochs", type=float, default=1.0)
    ap.add_argument("--round-to", default="1,auto", help="comma-separated --round-to values to compare")
    ap.add_argument("--criterion", default="attention-mean")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--int8", action="store_true",
                    help="also quantize each pruned model (256 training images, minmax) and test it")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    configure("text")
    data = shared("data", "cifar10-jpeg.tar.gz")
    weights = shared("weights", f"{args.model}-cifar10jpeg.pt")
    rows = []
    for rt in args.round_to.split(","):
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            run = prunekit.prune(prunekit.PruneConfig(
                model=args.model, weights=weights, data=data, target=args.target, out=os.path.join(d, "run"),
                schedule="oneshot", criterion=args.criterion, finetune_epochs=args.finetune_epochs, round_to=rt,
                latency_threads=args.threads))
            speed = {r["batch"]: r["speedup"] for r in run["speed"]["batches"]}
            int8 = None
            if args.int8:
                from prunekit.data import load_data
                from prunekit.deploy.export import export_onnx
                from prunekit.deploy.quantize import quantize_onnx

                bundle = load_data(data, (3, 32, 32))
                calib = bundle.to_tensor(bundle.calibration(256).images).numpy()
                test = (bundle.to_tensor(bundle.test.images).numpy(), bundle.test.labels)
                fp32 = os.path.join(d, "model.onnx")
                export_onnx(prunekit.load(os.path.join(d, "run")), torch.from_numpy(calib[:4]), fp32)
                q = quantize_onnx(fp32, os.path.join(d, "model.int8.onnx"), calib, calib[:16], test=test)
                int8 = q.accuracy
            rows.append({"round_to": rt, "resolved": run["alignment"]["round_to"],
                         "params_reduction": run["reduction"]["params"], "macs_reduction": run["reduction"]["macs"],
                         "acc_dense": run["accuracy"]["dense"], "acc_pruned": run["accuracy"]["pruned"],
                         "acc_finetuned": run["accuracy"].get("pruned_finetuned"), "speedup": speed,
                         "int8": int8, "wall_s": time.perf_counter() - t0})
    md = [f"{args.model} {args.target}, one-shot {args.criterion} + {args.finetune_epochs:g} fine-tune epoch(s), "
          f"test accuracy on the full test split; ONNX Runtime CPU speedup ({args.threads} thread)", "",
          "| --round-to | params ↓ | MACs ↓ | acc before fine-tune | acc after | speedup b1 | speedup b32 | wall |",
          "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        md.append(f"| {r['round_to']} ({r['resolved']}) | {r['params_reduction']:.1%} | {r['macs_reduction']:.1%} | "
                  f"{r['acc_pruned']:.2f} % | {r['acc_finetuned']:.2f} % | {r['speedup'].get(1, 0):.2f}× | "
                  f"{r['speedup'].get(32, 0):.2f}× | {r['wall_s'] / 60:.1f} min |")
    for r in rows:
        if r["int8"]:
            md.append(f"\nINT8 (--round-to {r['round_to']}): fp32 ONNX {r['int8']['fp32']:.2f} % → int8 "
                      f"{r['int8']['int8']:.2f} % on {r['int8']['images']:,} test images "
                      f"({r['int8']['int8'] - r['int8']['fp32']:+.2f} points)")
    md.append(f"\ndense test accuracy {rows[0]['acc_dense']:.2f} %; machine: {machine()}")
    tag = "-".join(args.round_to.split(",")) + ("-int8" if args.int8 else "")
    write_results(args.out, f"rounding_accuracy-{args.model}-{args.target.replace('=', '')}-{tag}",
                  {"rows": rows, "machine": machine(), "args": vars(args)}, "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
