"""Pareto on the runtime that ships (issue 24): ResNet-56 (shared weights) pruned to a measured speedup planned on
``--runtime``, every pruned row retrained with the same budget (``--minutes`` of wall-clock, or ``--epochs``),
then **every model timed in one interleaved loop** with the dense model on every runtime here, and each row's
test accuracy measured through the runtime it is timed on. x = speedup over the fastest dense deployment of
that loop (named in the table), so pruning is credited only with what it adds on top of the best dense model a
user could ship without it.

Rows (``--rows``):

- ``dense@R``: the dense model on every runtime R installed here (onnxruntime fp32 / int8, OpenVINO / int8);
- ``ours``: the default one-shot planned for ``--runtime`` (knapsack over the runtime's latency table, residual
  branches dropped where they pay, BN re-estimation, distillation, training at the CPU's native precision);
- ``ours+int8``: the same model quantized (static QDQ), timed on the runtime's int8 variant;
- ``width-only``: the same plan with ``--depth off`` (what depth buys over width alone);
- ``ort-planned``: planned for onnxruntime fp32 without depth (prunekit's plan before this issue), same recovery,
  timed on ``--runtime``;
- ``tp+bn+kd``: Torch-Pruning's own pruner (global group magnitude), its ratio bisected until the measured
  speedup on ``--runtime`` reaches the target (or its best), with prunekit's recovery and budget.

    python benchmarks/pareto.py --runtime openvino-cpu --speedups 1.5 --minutes 7
    python benchmarks/pareto.py --runtime openvino-cpu --speedups 1.5 --epochs 1 --tag ov-1ep

Models and rows are kept in ``--work`` (default ``/tmp/prunekit-pareto``), so an interrupted run resumes (the
peer's model lives in memory: its row is retrained); the final timing loop always runs anew, so running the same
command again re-times the trained rows.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import time

import numpy as np
from _common import machine, shared, write_results

import prunekit
from prunekit.compute.device import resolve_compute
from prunekit.compute.recovery import recalibrate, teacher_for, training_schedule
from prunekit.compute.train import evaluate, finetune
from prunekit.config import TrainingConfig
from prunekit.core.metrics import count_model
from prunekit.data import load_data
from prunekit.errors import PrunekitError
from prunekit.models import resolve_model
from prunekit.progress import configure, info
from prunekit.runtimes import available_runtimes, get_runtime

ROWS = ("ours", "ours+int8", "width-only", "ort-planned", "tp+bn+kd")
PLANNED = {"ours": {}, "width-only": {"depth": "off"}, "ort-planned": {"depth": "off", "runtime": "onnxruntime-cpu"}}


def budget(args) -> dict:
    return {"finetune_minutes": args.minutes, "finetune_epochs": args.epochs}


def planned_row(args, name, speedup, data, weights, work) -> dict:
    out = os.path.join(work, f"{name}-{speedup:g}")
    opts = {"runtime": args.runtime, **PLANNED[name]}
    run = prunekit.prune(prunekit.PruneConfig(
        model=args.model, weights=weights, data=data, target=f"speedup={speedup}", out=out, overwrite=True,
        schedule="oneshot", lr=args.lr, seed=args.seed, latency_threads=args.threads, speed_batches=(32,),
        **budget(args), **opts))
    acc = run["accuracy"]
    return {"model_dir": out, "params_reduction": run["reduction"]["params"],
            "macs_reduction": run["reduction"]["macs"], "planned_on": opts["runtime"],
            "acc_after_surgery": acc["pruned"], "acc_after_bn": acc.get("pruned_bn"), "acc_torch": acc[
                "pruned_finetuned"], "acc_dense": acc["dense"], "dropped": len((run.get("depth") or {}).get(
                    "dropped", [])), "finetune": {k: run["finetune"].get(k) for k in ("seconds", "steps",
                                                                                       "epochs_done", "amp")},
            "wall_s_job": sum(run["timings_s"].values())}


def tp_row(args, speedup, bundle, dense, spec, work) -> dict:
    from tp_peer import tp_prune_to_speedup

    grid = get_runtime(args.runtime).grid(args.threads).multiple
    pruned, peer = tp_prune_to_speedup(dense, spec.input_size, speedup, grid, batch=32, threads=args.threads,
                                       log=info, runtime=args.runtime)
    compute = resolve_compute("auto", "auto")
    training = TrainingConfig(lr=args.lr, distill="on", bn_images=1024)
    before = evaluate(pruned, bundle, bundle.test, compute=compute)
    recalibrate(pruned, bundle, training, args.seed, compute)
    after_bn = evaluate(pruned, bundle, bundle.test, compute=compute)
    summary = finetune(pruned, bundle, training_schedule(training, args.epochs, args.seed, minutes=args.minutes),
                       compute, teacher_for(dense, bundle, training))
    MODELS[f"tp+bn+kd@speedup={speedup:g}"] = pruned  # kept in memory: nothing is unpickled
    count_d, count_p = count_model(dense, spec.input_size), count_model(pruned, spec.input_size)
    return {"in_memory": True, "params_reduction": 1 - count_p.params / count_d.params,
            "macs_reduction": 1 - count_p.macs / count_d.macs, "planned_on": args.runtime,
            "acc_after_surgery": before, "acc_after_bn": after_bn,
            "acc_torch": evaluate(pruned, bundle, bundle.test, compute=compute), "tp_ratio": peer["ratio"],
            "tp_reached": peer["reached"], "finetune": {k: summary.get(k) for k in ("seconds", "steps",
                                                                                     "epochs_done", "amp")}}


MODELS: dict = {}  # models this process trained without a run folder (the peer's), by row tag


def load_row_model(row):
    if "model_dir" in row:
        return prunekit.load(row["model_dir"])
    return MODELS[f"{row['method']}@{row['target']}"]


def timing_runtime(method: str, runtime: str) -> str:
    rt = get_runtime(runtime)
    if method.endswith("+int8"):
        return next(r.name for r in available_runtimes("onnx") if r.family == rt.family and r.quantized)
    return rt.name


def final_loop(args, results, bundle, dense, spec, work) -> None:
    """Every row's model and the dense model on every runtime, one interleaved loop per batch size, and the test
    accuracy of each through its runtime."""
    from prunekit.deploy.speed import deployables
    from prunekit.deploy.frontier import frontier_rows, key, runner_accuracy, split
    from prunekit.runtimes.base import time_runners

    dense_runtimes = [r.name for r in available_runtimes("onnx", frontier=True)]
    models = {"dense": dense}
    timed = {}  # frontier key → (method, runtime)
    for row in results["rows"]:
        if row.get("error") or row["method"].startswith("dense"):
            continue
        base = row["method"].replace("+int8", "")
        src = next((r for r in results["rows"] if r["method"] == base and r["target"] == row["target"]), row)
        models[f"{row['method']}@{row['target']}"] = load_row_model(src)
    calib = bundle.to_tensor(bundle.calibration(256, args.seed).images).numpy()
    with deployables(dense_runtimes, models, spec.input_size, calib) as files:
        artifacts = {key(r, "dense"): files[r]["dense"] for r in dense_runtimes}
        for tag in models:
            if tag == "dense":
                continue
            method = tag.split("@")[0]
            rt = timing_runtime(method, args.runtime)
            artifacts[key(rt, tag)] = files[rt][tag]
            timed[key(rt, tag)] = tag
        images, labels = bundle.to_tensor(bundle.test.images).numpy(), np.asarray(bundle.test.labels)
        accuracy = {k: runner_accuracy(split(k)[0], a, images, labels, args.threads) for k, a in artifacts.items()}
        loops = {}
        for b in (32, 1):
            shape = (b, *spec.input_size)
            runners = {k: get_runtime(split(k)[0]).load(a, args.threads, shape) for k, a in artifacts.items()}
            measured = time_runners(runners, shape, 5, args.runs)
            rows, fastest = frontier_rows(measured, accuracy)
            loops[b] = {"rows": rows, "fastest_dense": fastest}
            for fr in rows:
                fr["same_dense"] = (measured.stats[key(fr["runtime"], "dense")].p50_ms / fr["p50_ms"]
                                    if key(fr["runtime"], "dense") in measured.stats else None)
    results["frontier"] = {"loops": loops, "timed": timed}


def markdown(results: dict) -> str:
    a = results["args"]
    loops = results.get("frontier", {}).get("loops", {})
    head = (f"{a['model']} (shared weights), planned for {a['runtime']}, retraining "
            + (f"{a['minutes']:g} min" if a["minutes"] else f"{a['epochs']:g} epoch(s)") + f" per pruned row, "
            f"seed {a['seed']}, {a['threads']} thread(s); every model timed in one interleaved loop; accuracy on "
            "the full test split through the runtime that times it")
    md = [head, ""]
    for b, loop in sorted(loops.items(), key=lambda kv: -int(kv[0])):
        f = loop["fastest_dense"]
        md += [f"batch {b}: fastest dense deployment **{f['runtime']} ({f['precision']}) {f['p50_ms']:.2f} ms**", "",
               "| model | runtime | precision | p50 ms | × over fastest dense | × over same runtime's dense | "
               "MACs ↓ | test acc |", "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
        timed = results["frontier"]["timed"]
        for fr in sorted(loop["rows"], key=lambda r: -r["over_fastest_dense"]):
            k = f"{fr['runtime']}|{fr['model']}"
            tag = timed.get(k, "dense")
            row = next((r for r in results["rows"] if f"{r['method']}@{r['target']}" == tag), None)
            macs = f"{row['macs_reduction']:.1%}" if row and "macs_reduction" in row else "0"
            same = f"{fr['same_dense']:.2f}×" if fr.get("same_dense") and tag != "dense" else "–"
            md.append(f"| {tag} | {fr['runtime']} | {fr['precision']} | {fr['p50_ms']:.2f} | "
                      f"**{fr['over_fastest_dense']:.2f}×** | {same} | {macs} | "
                      f"{fr.get('accuracy', float('nan')):.2f} % |")
        md.append("")
    md.append(f"machine: {results['machine']['cpu']}, {results['machine']['cores']} cores; command: "
              f"`{results['machine']['command']}`")
    return "\n".join(md) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runtime", default="openvino-cpu")
    ap.add_argument("--model", default="resnet56")
    ap.add_argument("--speedups", default="1.5")
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--minutes", type=float, default=0.0, help="fine-tune wall-clock per pruned row")
    ap.add_argument("--epochs", type=float, default=0.0, help="fine-tune epochs per pruned row")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=60, help="timed rounds of the final interleaved loop")
    ap.add_argument("--tag", default=None)
    ap.add_argument("--work", default="/tmp/prunekit-pareto")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args(argv)
    if not (args.minutes or args.epochs):
        raise SystemExit("give --minutes or --epochs (the retraining budget of every pruned row)")
    configure("text")
    data, weights = shared("data", "cifar10-jpeg.tar.gz"), shared("weights", f"{args.model}-cifar10jpeg.pt")
    tag = args.tag or f"{args.runtime}-" + (f"{args.minutes:g}min" if args.minutes else f"{args.epochs:g}ep")
    name = f"pareto-{args.model}-{tag}"
    work = os.path.join(args.work, name)
    os.makedirs(work, exist_ok=True)
    state = os.path.join(work, "rows.json")
    results = {"rows": [], "machine": machine(), "args": vars(args)}
    if os.path.isfile(state):
        with open(state) as f:  # rows whose model lived in a finished process's memory are trained again
            results["rows"] = [r for r in json.load(f) if not r.get("in_memory")]
    done = {(r["target"], r["method"]) for r in results["rows"]}
    dense, spec = resolve_model(args.model, weights=weights)
    bundle = load_data(data, spec.input_size)
    for speedup in [float(s) for s in args.speedups.split(",")]:
        for method in args.rows.split(","):
            target = f"speedup={speedup:g}"
            if (target, method) in done:
                continue
            info(f"pareto ({args.runtime}): {method} at {target}")
            t0 = time.perf_counter()
            try:
                if method in PLANNED:
                    row = planned_row(args, method, speedup, data, weights, work)
                elif method == "ours+int8":
                    row = {}  # the ours model, quantized in the final loop
                elif method == "tp+bn+kd":
                    row = tp_row(args, speedup, bundle, copy.deepcopy(dense), spec, work)
                else:
                    raise SystemExit(f"unknown row {method!r}: {', '.join(ROWS)}")
            except PrunekitError as e:
                row = {"error": str(e)}
            row.update({"target": target, "method": method, "wall_s": time.perf_counter() - t0,
                        "cpu": machine()["cpu"]})
            results["rows"].append(row)
            with open(state, "w") as f:
                json.dump(results["rows"], f, indent=2, default=float)
    info("pareto: the final interleaved loop (every model, every dense deployment) and test accuracies")
    final_loop(args, results, bundle, dense, spec, work)
    write_results(args.out, name, results, markdown(results))


if __name__ == "__main__":
    main()
