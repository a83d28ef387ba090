"""Speedup efficiency on the runtime that ships (issue 24): torchvision ResNet-50 and MobileNetV2 at 224², random
init and random data, one-shot ``flops=0.5`` (a MAC ratio of 2.0) planned for onnxruntime (width only, the plan
before this issue) and for OpenVINO (its measured channel grid; width only, and with residual branches that may
be dropped), then every pruned model and the dense one timed on OpenVINO at ``--batch`` in one interleaved loop.
Efficiency = speedup over dense OpenVINO / MAC ratio (1.0: time falls as fast as MACs).

    python benchmarks/efficiency.py --batch 8 --threads 2
"""
from __future__ import annotations

import argparse
import os
import tempfile

from _common import machine, write_results

import prunekit
from prunekit.core.metrics import count_model
from prunekit.deploy.speed import deployables
from prunekit.progress import configure, info
from prunekit.runtimes import get_runtime
from prunekit.runtimes.base import time_runners

PLANS = {"onnxruntime-planned": dict(runtime="onnxruntime-cpu", depth="off"),
         "openvino-planned": dict(runtime="openvino-cpu", depth="off"),
         "openvino-planned+depth": dict(runtime="openvino-cpu", depth="on")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="torchvision:resnet50,torchvision:mobilenet_v2")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    configure("text")
    rows = []
    for name in args.models.split(","):
        with tempfile.TemporaryDirectory() as d:
            models, macs = {}, {}
            for tag, opts in PLANS.items():
                info(f"efficiency: {name} flops=0.5 {tag}")
                run = prunekit.prune(prunekit.PruneConfig(
                    model=name, input_size=(3, 224, 224), data="random", target="flops=0.5", schedule="oneshot",
                    calib_images=32, batch_size=16, speed_batches=(), latency_threads=args.threads,
                    out=os.path.join(d, tag), **opts))
                models[tag] = prunekit.load(os.path.join(d, tag))
                macs[tag] = run["dense"]["macs"] / run["pruned"]["macs"]
            dense, _ = prunekit.resolve_model(name, input_size=(3, 224, 224))
            models["dense"] = dense
            ov = get_runtime("openvino-cpu").require()
            shape = (args.batch, 3, 224, 224)
            with deployables([ov.name], models, (3, 224, 224)) as files:
                runners = {tag: ov.load(path, args.threads, shape) for tag, path in files[ov.name].items()}
                measured = time_runners(runners, shape, 5, args.runs)
            for tag in PLANS:
                sp = measured.speedup("dense", tag)
                rows.append({"model": name, "plan": tag, "mac_ratio": macs[tag], "speedup": sp.value,
                             "low": sp.low, "high": sp.high, "efficiency": sp.value / macs[tag],
                             "dense_ms": measured.stats["dense"].p50_ms, "ms": measured.stats[tag].p50_ms,
                             "precision": measured.precision[tag], "params": count_model(
                                 models[tag], (3, 224, 224)).params})
                print(rows[-1], flush=True)
    m = machine()
    md = [f"flops=0.5, random init, 224², OpenVINO at batch {args.batch}, {args.threads} threads, one interleaved "
          "loop per model", "", "| model | plan | MAC ratio | speedup over dense OpenVINO | efficiency |",
          "| --- | --- | ---: | ---: | ---: |"]
    md += [f"| {r['model']} | {r['plan']} | {r['mac_ratio']:.2f} | {r['speedup']:.2f}× ({r['low']:.2f}–"
           f"{r['high']:.2f}) | **{r['efficiency']:.2f}** |" for r in rows]
    md.append(f"\nmachine: {m['cpu']}, {m['cores']} cores; command: `{m['command']}`")
    write_results(args.out, f"efficiency-openvino-b{args.batch}", {"rows": rows, "machine": m, "args": vars(args)},
                  "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
