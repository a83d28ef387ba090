"""How well does the latency table predict a pruned model's latency? Predicted vs measured, onnxruntime CPU.

For each model, plans at several FLOPs targets (one-shot, with and without alignment) are predicted from the
per-layer table (dense measured × Σ table(pruned) / Σ table(dense)) and then measured for real (the pruned
model exported, timed interleaved with the dense one).

    python benchmarks/latency_prediction.py --threads 1 --batch 1
"""
from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np
import torch
from _common import machine, write_results

from prunekit.core.allocate import plan_to_target
from prunekit.deploy.speed import measure_pair
from prunekit.deploy.export import export_onnx
from prunekit.core.graph import find_groups
from prunekit.core.trace import build_graph
from prunekit.deploy.latency_table import LatencyTable, predict_ms
from prunekit.core.costmodel import CostModel
from prunekit.models import resolve_model
from prunekit.core.scoring import score_groups
from prunekit.core.surgery import apply_plan

MODELS = [("resnet56", (3, 32, 32)), ("torchvision:resnet18", (3, 224, 224)),
          ("torchvision:mobilenet_v2", (3, 224, 224))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--targets", default="0.3,0.5,0.7")
    ap.add_argument("--round-to", default="1,16")
    ap.add_argument("--models", default=",".join(m for m, _ in MODELS))
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name, size in [m for m in MODELS if m[0] in args.models.split(",")]:
            torch.manual_seed(0)
            model, spec = resolve_model(name, input_size=size)
            groups = find_groups(model, build_graph(model, size), spec.classifier)
            scores = score_groups(model, groups, "l1")
            table = LatencyTable("onnxruntime-cpu", args.threads)
            cost = CostModel.build(model, groups, size)
            cost.attach_latency(model, size, table, batch=args.batch)
            dense_path = os.path.join(d, "dense.onnx")
            export_onnx(model, torch.randn(2, *size), dense_path, exporter="torchscript")
            for rt in map(int, args.round_to.split(",")):
                for amount in map(float, args.targets.split(",")):
                    plan, _, _ = plan_to_target(scores, cost, "macs", amount, rt, relax=True)
                    pruned, _ = apply_plan(model, groups, plan, size)
                    path = os.path.join(d, "pruned.onnx")
                    export_onnx(pruned, torch.randn(2, *size), path, exporter="torchscript")
                    st = measure_pair({"dense": dense_path, "pruned": path}, size, args.batch, args.threads,
                                      warmup=5, runs=args.runs)
                    table_pruned = cost.predict_latency(plan)
                    pred = predict_ms(st["dense"].p50_ms, cost.dense_latency, table_pruned)
                    err = pred / st["pruned"].p50_ms - 1
                    # the alternative model: the removed layer time comes off, everything else stays
                    additive = st["dense"].p50_ms - (cost.dense_latency - table_pruned)
                    err_add = additive / st["pruned"].p50_ms - 1
                    rows.append({"model": name, "round_to": rt, "flops_target": amount,
                                 "dense_ms": st["dense"].p50_ms, "measured_ms": st["pruned"].p50_ms,
                                 "predicted_ms": pred, "error": err, "additive_ms": additive,
                                 "additive_error": err_add})
                    print(f"{name:<26} round {rt:<3} flops={amount}: predicted {pred:8.3f} ms, measured "
                          f"{st['pruned'].p50_ms:8.3f} ms ({err:+.1%}); additive {additive:8.3f} ms ({err_add:+.1%})",
                          flush=True)
            table.save()
    errs = np.abs([r["error"] for r in rows])
    md = [f"Latency table prediction vs measurement: onnxruntime CPU, {args.threads} thread(s), batch {args.batch}, "
          "p50 of interleaved runs; predicted = dense measured × Σ table(pruned layers) / Σ table(dense layers).", "",
          "Additive = dense measured − (Σ table(dense) − Σ table(pruned)), the alternative model.", "",
          "| model | --round-to | FLOPs target | dense ms | measured ms | predicted ms | error | additive ms | error |",
          "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        md.append(f"| {r['model']} | {r['round_to']} | {r['flops_target']:.0%} | {r['dense_ms']:.3f} | "
                  f"{r['measured_ms']:.3f} | {r['predicted_ms']:.3f} | {r['error']:+.1%} | {r['additive_ms']:.3f} | "
                  f"{r['additive_error']:+.1%} |")
    add = np.abs([r["additive_error"] for r in rows])
    md.append(f"\nMean |error| {errs.mean():.1%}, max {errs.max():.1%} over {len(rows)} plans (additive: mean "
              f"{add.mean():.1%}, max {add.max():.1%}). "
              f"Machine: {machine()['cpu']}; command: `python benchmarks/{machine()['command']}`")
    write_results(args.out, f"latency_prediction-t{args.threads}-b{args.batch}", {"rows": rows, "machine": machine()},
                  "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
