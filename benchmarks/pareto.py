"""Accuracy against *measured* latency: ResNet-56 (shared weights) pruned to a measured speedup on onnxruntime
CPU, every row retrained for the same epochs from the same seed, test accuracy on the full test split.

Rows (``--rows``, comma-separated, run in this order; each row is written to the JSON as soon as it ends):

- ``threshold``: prunekit before issue 17 — Algorithm 3 threshold rounded to the grid, cross-entropy fine-tune;
- ``threshold+bn``: + BatchNorm re-estimation after surgery;
- ``threshold+bn+kd``: + distillation from the dense model;
- ``knapsack+bn+kd``: widths chosen by the knapsack over the latency table (attention-mean scores);
- ``knapsack-gn+bn+kd``: the same with Torch-Pruning's group-norm scores (``--criterion group-norm``);
- ``search+bn+kd``: the adaptive search (knapsack size steps, same recovery) at the same epochs, to the MACs
  reduction the ``knapsack+bn+kd`` row of that speedup reached;
- ``tp``: Torch-Pruning's own pruner (``MetaPruner`` + ``GroupMagnitudeImportance``, global, ``round_to`` the
  same multiple, its ratio bisected until the measured speedup reaches the target), cross-entropy fine-tune;
- ``tp+bn+kd``: the same pruned model with prunekit's recovery (BN re-estimation + distillation);
- ``int8``: the dense model quantized (static QDQ, 256 calibration images): the reference a user also weighs;
- ``knapsack+bn+kd+int8``: pruning and INT8 together: the ``knapsack+bn+kd`` model of that (fp32) speedup,
  quantized like ``int8``; its speedup is over the dense fp32 model, as every row's (``speedup_vs_int8``: over
  the dense INT8 model; ``speedup_fp32``: the pruned fp32 model's). Planning for ``--runtime
  onnxruntime-cpu-int8`` directly is refused at 1.5× on ResNet-20 (most of an int8 model's time does not
  shrink with channels: the refusal says how much).

Every speedup is dense p50 / pruned p50 from one interleaved onnxruntime run (``prunekit.deploy.speed.compare_speed``,
1 thread) at batch 32 and 1.

    python benchmarks/pareto.py --speedups 1.5,2.0 --epochs 1 --out benchmarks/results

With ``--runtime R`` it is the Pareto on the runtime that ships instead (``benchmarks/runtime_pareto.py``: rows
planned for R, x = speedup over the fastest dense deployment measured in one final interleaved loop).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import tempfile
import time

import torch
from _common import machine, shared, write_results

import prunekit
from prunekit.deploy.speed import compare_speed
from prunekit.config import TrainingConfig
from prunekit.data import load_data
from prunekit.compute.device import resolve_compute
from prunekit.errors import PrunekitError
from prunekit.core.metrics import count_model
from prunekit.models import resolve_model
from prunekit.progress import configure, info
from prunekit.compute.recovery import recalibrate, teacher_for, training_schedule
from prunekit.deploy.runtime import resolve_round_to
from prunekit.compute.train import evaluate, finetune

ROWS = ("knapsack+bn+kd", "knapsack-gn+bn+kd", "tp", "tp+bn+kd", "threshold", "threshold+bn+kd", "int8",
        "threshold+bn", "search+bn+kd", "knapsack+bn+kd+int8")
ONESHOT = {"threshold": dict(allocate="threshold", bn_images=0, distill="off"),
           "knapsack-gn+bn+kd": dict(allocate="knapsack", distill="on", criterion="group-norm"),
           "threshold+bn": dict(allocate="threshold", distill="off"),
           "threshold+bn+kd": dict(allocate="threshold", distill="on"),
           "knapsack+bn+kd": dict(allocate="knapsack", distill="on")}


def speeds(run_speed: dict) -> dict:
    return {int(r["batch"]): r["speedup"] for r in run_speed["batches"]}


def oneshot_row(args, name, speedup, data, weights, d):
    run = prunekit.prune(prunekit.PruneConfig(
        model=args.model, weights=weights, data=data, target=f"speedup={speedup}", out=os.path.join(d, name),
        schedule="oneshot", finetune_epochs=args.epochs, lr=args.lr, seed=args.seed, device=args.device,
        latency_threads=args.threads, **ONESHOT[name]))
    acc = run["accuracy"]
    return {"params_reduction": run["reduction"]["params"], "macs_reduction": run["reduction"]["macs"],
            "acc_after_surgery": acc["pruned"], "acc_after_bn": acc.get("pruned_bn"),
            "acc": acc["pruned_finetuned"], "acc_dense": acc["dense"], "speedup": speeds(run["speed"]),
            "planned_speedup": run["target"]["reached"], "round_to": run["alignment"]["round_to"],
            "finetune_s": run["finetune"]["seconds"], "teacher_s": (run["finetune"].get("distill") or {}).get(
                "teacher_s"), "bn_s": (run["recovery"]["bn_reestimate"] or {}).get("seconds")}


def search_row(args, speedup, data, weights, d, macs):
    if macs is None:
        return {"skipped": "needs the knapsack+bn+kd row of this speedup first (its MACs reduction)"}
    run = prunekit.prune(prunekit.PruneConfig(
        model=args.model, weights=weights, data=data, target=f"flops={macs:.4f}", out=os.path.join(d, "search"),
        schedule="adaptive", budget_epochs=args.epochs, allocate="knapsack", distill="on", lr=args.lr,
        seed=args.seed, device=args.device, latency_threads=args.threads, val_images=args.val_images))
    s = run["search"]
    return {"params_reduction": run["reduction"]["params"], "macs_reduction": run["reduction"]["macs"],
            "acc": run["accuracy"]["pruned"], "acc_dense": run["accuracy"]["dense"], "speedup": speeds(run["speed"]),
            "rounds": s["rounds"], "epochs": s["epochs"]["total"], "round_timing": s["round_timing"],
            "wall_s": s["wall_s"]}


def tp_row(args, name, speedup, bundle, dense, spec, round_to, cache):
    from tp_peer import tp_prune_to_speedup

    key = (speedup, round_to)
    if key not in cache:  # the same pruned model for both peer rows
        cache[key] = tp_prune_to_speedup(dense, spec.input_size, speedup, round_to, batch=32, threads=args.threads,
                                         log=info)
    pruned, peer = cache[key]
    pruned = copy.deepcopy(pruned)
    compute = resolve_compute(args.device, "auto")
    training = TrainingConfig(lr=args.lr, device=args.device,
                                              distill="on" if name == "tp+bn+kd" else "off",
                                              bn_images=1024 if name == "tp+bn+kd" else 0)
    before = evaluate(pruned, bundle, bundle.test, compute=compute)
    bn = recalibrate(pruned, bundle, training, args.seed, compute)
    after_bn = evaluate(pruned, bundle, bundle.test, compute=compute) if bn else None
    summary = finetune(pruned, bundle, training_schedule(training, args.epochs, args.seed), compute,
                       teacher_for(dense, bundle, training))
    count_d, count_p = count_model(dense, spec.input_size), count_model(pruned, spec.input_size)
    return {"params_reduction": 1 - count_p.params / count_d.params, "macs_reduction": 1 - count_p.macs / count_d.macs,
            "acc_after_surgery": before, "acc_after_bn": after_bn,
            "acc": evaluate(pruned, bundle, bundle.test, compute=compute),
            "speedup": speeds(compare_speed(dense, pruned, spec.input_size, threads=args.threads)),
            "planned_speedup": peer["measured_speedup"], "tp_ratio": peer["ratio"], "round_to": round_to,
            "reached": peer["reached"], "finetune_s": summary["seconds"]}


def _quantized(args, bundle, model, d, name):
    """(fp32 ONNX path, INT8 ONNX path, QuantizeReport with test accuracies) of ``model``."""
    from prunekit.deploy.export import export_onnx
    from prunekit.deploy.quantize import quantize_onnx

    calib = bundle.to_tensor(bundle.calibration(256, args.seed).images).numpy()
    fp32, int8 = os.path.join(d, f"{name}.onnx"), os.path.join(d, f"{name}.int8.onnx")
    export_onnx(model, torch.from_numpy(calib[:4]), fp32)
    q = quantize_onnx(fp32, int8, calib, calib[:16], test=(bundle.to_tensor(bundle.test.images).numpy(),
                                                           bundle.test.labels))
    return fp32, int8, q


def _speedups(paths: dict, spec, threads: int, over: str, of: str) -> dict:
    from prunekit.deploy.speed import measure_pair

    sp = {}
    for b in (1, 32):
        st = measure_pair(paths, spec.input_size, b, threads, warmup=3, runs=30)
        sp[b] = st[over].p50_ms / st[of].p50_ms
    return sp


def int8_row(args, bundle, dense, spec, d):
    fp32, int8, q = _quantized(args, bundle, dense, d, "dense")
    return {"acc": q.accuracy["int8"], "acc_fp32": q.accuracy["fp32"], "params_reduction": 0.0,
            "macs_reduction": 0.0, "speedup": _speedups({"dense": fp32, "int8": int8}, spec, args.threads,
                                                         "dense", "int8")}


def pruned_int8_row(args, speedup, data, weights, bundle, dense, spec, d):
    row = oneshot_row(args, "knapsack+bn+kd", speedup, data, weights, d)
    row["speedup_fp32"] = row.pop("speedup")  # the run's own check: pruned fp32 over dense fp32
    pruned = prunekit.load(os.path.join(d, "knapsack+bn+kd"))
    dense_fp32, dense_int8, _ = _quantized(args, bundle, dense, d, "dense")
    _, pruned_int8, q = _quantized(args, bundle, pruned, d, "pruned")
    paths = {"dense": dense_fp32, "dense_int8": dense_int8, "pruned_int8": pruned_int8}
    row.update(acc_fp32=row["acc"], acc=q.accuracy["int8"],
               speedup=_speedups(paths, spec, args.threads, "dense", "pruned_int8"),
               speedup_vs_int8=_speedups(paths, spec, args.threads, "dense_int8", "pruned_int8"))
    return row


def markdown(results: dict) -> str:
    dense = next((r["acc_dense"] for r in results["rows"] if r.get("acc_dense")), None)
    md = [f"{results['args']['model']}, onnxruntime CPU ({results['args']['threads']} thread), "
          f"{results['args']['epochs']:g} epoch(s) of retraining for every row, seed {results['args']['seed']}, "
          f"test accuracy on the full test split" + (f"; dense {dense:.2f} %" if dense else ""), "",
          "| target | method | speedup b32 | speedup b1 | MACs ↓ | params ↓ | acc after surgery | after BN | "
          "test acc | round_to |", "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]

    def pct(v):
        return "–" if v is None else f"{v:.2f} %"
    for r in results["rows"]:
        if r.get("skipped") or r.get("error"):
            md.append(f"| {r['target']} | {r['method']} | {r.get('skipped') or r.get('error')} |||||||| ")
            continue
        sp = {int(k): v for k, v in r["speedup"].items()}
        md.append(f"| {r['target']} | {r['method']} | {sp.get(32, 0):.2f}× | {sp.get(1, 0):.2f}× | "
                  f"{r['macs_reduction']:.1%} | {r['params_reduction']:.1%} | {pct(r.get('acc_after_surgery'))} | "
                  f"{pct(r.get('acc_after_bn'))} | **{r['acc']:.2f} %** | {r.get('round_to', '–')} |")
    cpus = sorted({r["cpu"] for r in results["rows"] if r.get("cpu")})
    if cpus:
        md.append(f"\nrows ran on: {'; '.join(cpus)} (see each row's `cpu` in the JSON)")
    md.append(f"\nmachine: {results['machine']['cpu']}, {results['machine']['cores']} cores; command: "
              f"`{results['machine']['command']}`")
    return "\n".join(md) + "\n"


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    by_method: dict[str, list] = {}
    for r in results["rows"]:
        if "acc" in r and "speedup" in r:
            by_method.setdefault(r["method"], []).append(({int(k): v for k, v in r["speedup"].items()}[32], r["acc"]))
    for method, pts in by_method.items():
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-" if len(pts) > 1 else "o", label=method)
    dense = next((r["acc_dense"] for r in results["rows"] if r.get("acc_dense")), None)
    if dense:
        ax.axhline(dense, color="grey", ls="--", lw=1, label=f"dense {dense:.2f} %")
    ax.set_xlabel("measured speedup, onnxruntime CPU, batch 32 (×)")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title(f"{results['args']['model']}: accuracy vs measured speedup, {results['args']['epochs']:g} "
                 "epoch(s) retraining")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    import sys

    if "--runtime" in sys.argv:  # the runtime that ships (issue 24): its own rows and one final timing loop
        import runtime_pareto

        return runtime_pareto.main(sys.argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet56")
    ap.add_argument("--speedups", default="1.5,2.0")
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--epochs", type=float, default=1.0, help="retraining for every row (CPU preset 1, GPU 15)")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--val-images", type=int, default=None, help="search rows: validation images per round")
    ap.add_argument("--tag", default="cpu")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    configure("text")
    data, weights = shared("data", "cifar10-jpeg.tar.gz"), shared("weights", f"{args.model}-cifar10jpeg.pt")
    name = f"pareto-{args.model}-{args.tag}"
    json_path = os.path.join(args.out, f"{name}.json")
    results = {"rows": [], "machine": machine(), "args": vars(args)}
    if os.path.isfile(json_path):  # resume: keep the rows already measured with these settings
        with open(json_path) as f:
            old = json.load(f)
        results["rows"] = [r for r in old.get("rows", []) if "acc" in r]
    done = {(r["target"], r["method"]) for r in results["rows"]}
    dense, spec = resolve_model(args.model, weights=weights)
    bundle = load_data(data, spec.input_size)
    round_to = resolve_round_to("auto", "onnxruntime-cpu").round_to
    cache: dict = {}
    for speedup in [float(s) for s in args.speedups.split(",")]:
        for method in args.rows.split(","):
            target = "dense" if method == "int8" else f"speedup={speedup:g}"
            if (target, method) in done:
                continue
            info(f"pareto: {method} at {target}")
            t0 = time.perf_counter()
            ours = next((r for r in results["rows"] if r["target"] == target and r["method"] == "knapsack+bn+kd"
                         and "acc" in r), None)
            with tempfile.TemporaryDirectory() as d:
                try:
                    if method in ONESHOT:
                        row = oneshot_row(args, method, speedup, data, weights, d)
                    elif method == "search+bn+kd":
                        row = search_row(args, speedup, data, weights, d, ours and ours["macs_reduction"])
                    elif method in ("tp", "tp+bn+kd"):
                        row = tp_row(args, method, speedup, bundle, dense, spec,
                                     ours["round_to"] if ours else round_to, cache)
                    elif method == "int8":
                        row = int8_row(args, bundle, dense, spec, d)
                    elif method == "knapsack+bn+kd+int8":
                        row = pruned_int8_row(args, speedup, data, weights, bundle, dense, spec, d)
                    else:
                        raise SystemExit(f"unknown row {method!r}: {', '.join(ROWS)}")
                except PrunekitError as e:
                    row = {"error": str(e)}
            row.update({"target": target, "method": method, "wall_s": time.perf_counter() - t0,
                        "cpu": machine()["cpu"]})  # a resumed table may span machines: say which ran the row
            results["rows"].append(row)
            done.add((target, method))
            write_results(args.out, name, results, markdown(results))
            plot(results, os.path.join(args.out, f"{name}.png"))


if __name__ == "__main__":
    main()
