"""The accuracy cost of aligned channel counts: ResNet-56 (shared weights) one-shot to a target, fine-tuned,
with --round-to 1 vs --round-to auto, test accuracy on the full test split, and the ONNX speedup of each.

    python benchmarks/rounding_accuracy.py --target flops=0.5 --finetune-epochs 1 --out benchmarks/results
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

from _common import machine, shared, write_results

import prunekit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet56")
    ap.add_argument("--target", default="flops=0.5")
    ap.add_argument("--finetune-epochs", type=float, default=1.0)
    ap.add_argument("--round-to", default="1,auto", help="comma-separated --round-to values to compare")
    ap.add_argument("--criterion", default="attention-mean")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    data = shared("data", "cifar10-jpeg.tar.gz")
    weights = shared("weights", f"{args.model}-cifar10jpeg.pt")
    rows = []
    for rt in args.round_to.split(","):
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            run = prunekit.prune(prunekit.PruneConfig(
                model=args.model, weights=weights, data=data, target=args.target, out=os.path.join(d, "run"),
                schedule="oneshot", criterion=args.criterion, finetune_epochs=args.finetune_epochs, round_to=rt,
                latency_threads=args.threads), log=print)
            speed = {r["batch"]: r["speedup"] for r in run["speed"]["batches"]}
            rows.append({"round_to": rt, "resolved": run["alignment"]["round_to"],
                         "params_reduction": run["reduction"]["params"], "macs_reduction": run["reduction"]["macs"],
                         "acc_dense": run["accuracy"]["dense"], "acc_pruned": run["accuracy"]["pruned"],
                         "acc_finetuned": run["accuracy"].get("pruned_finetuned"), "speedup": speed,
                         "wall_s": time.perf_counter() - t0})
    md = [f"{args.model} {args.target}, one-shot {args.criterion} + {args.finetune_epochs:g} fine-tune epoch(s), "
          f"test accuracy on the full test split; ONNX Runtime CPU speedup ({args.threads} thread)", "",
          "| --round-to | params ↓ | MACs ↓ | acc before fine-tune | acc after | speedup b1 | speedup b32 | wall |",
          "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        md.append(f"| {r['round_to']} ({r['resolved']}) | {r['params_reduction']:.1%} | {r['macs_reduction']:.1%} | "
                  f"{r['acc_pruned']:.2f} % | {r['acc_finetuned']:.2f} % | {r['speedup'].get(1, 0):.2f}× | "
                  f"{r['speedup'].get(32, 0):.2f}× | {r['wall_s'] / 60:.1f} min |")
    md.append(f"\ndense test accuracy {rows[0]['acc_dense']:.2f} %; machine: {machine()}")
    write_results(args.out, f"rounding_accuracy-{args.model}-{args.target.replace('=', '')}",
                  {"rows": rows, "machine": machine(), "args": vars(args)}, "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
