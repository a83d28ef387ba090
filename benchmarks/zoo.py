"""The torchvision zoo through prunekit (issue 25): every classification and segmentation model, and the network
part of every detector (its backbone with FPN, a dict of feature maps), through ``inspect`` → one-shot
``flops=0.3`` on random data → ``export`` with per-output parity, each in its own process with a time limit.
Each model ends as **pass**, **refused** (one ``error:`` line: the reason is recorded) or **fail** (anything else:
a traceback, a failed check, a timeout). Beside Torch-Pruning's published 77/85 torchvision models.

Inputs are small where a model allows (64², else 224²: a model refused at 64² is tried at 224², and one that
does not run at 224² at 320²); models over
``--max-params`` (default 100 M) are listed as skipped. Results go to ``benchmarks/results/zoo.{json,md}`` after
every model, and a run resumes from them.

    python benchmarks/zoo.py                 # the whole zoo, resumable
    python benchmarks/zoo.py --only resnet18,lraspp_mobilenet_v3_large
    python benchmarks/zoo.py --timm cspdarknet53,ghostnet_100 --target flops=0.4   # timm models by name: zoo-timm
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from _common import ROOT, machine, same_machine, write_results

DETECTORS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "zoo_detectors.py")


def zoo() -> list[tuple[str, str, str]]:
    """(kind, name, prunekit model spec) of every model in the sweep."""
    import torchvision

    import zoo_detectors

    out = [("classification", n, f"torchvision:{n}") for n in torchvision.models.list_models(module=torchvision.models)]
    out += [("segmentation", n, f"torchvision:{n}")
            for n in torchvision.models.list_models(module=torchvision.models.segmentation)]
    out += [("detection", n, f"{DETECTORS}:{n}") for n in zoo_detectors.FACTORIES]
    return out


def params_of(spec: str) -> int:
    from prunekit.models import resolve_model

    model, _ = resolve_model(spec, input_size=(3, 224, 224), trust_pickle=False)
    return sum(p.numel() for p in model.parameters())


def run_one(spec: str, size: int, timeout: float, target: str = "flops=0.3") -> dict:
    """prune + export in a fresh process; (status, reason, seconds, figures)."""
    with tempfile.TemporaryDirectory(prefix="zoo-") as d:
        out = os.path.join(d, "run")
        cmd = (f"prunekit prune '{spec}' --input-size 3,{size},{size} --data random --target {target} --schedule "
               f"oneshot --calib-images 8 --batch-size 8 --speed-batches none --out {out} -q "
               f"&& prunekit export {out} --out {out}/model.onnx --trust-code -q")
        t0 = time.perf_counter()
        try:
            res = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=timeout, cwd=ROOT)
        except subprocess.TimeoutExpired:
            return {"status": "fail", "reason": f"timed out after {timeout:.0f} s", "size": size,
                    "seconds": time.perf_counter() - t0}
        seconds = time.perf_counter() - t0
        err = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
        if res.returncode == 0:
            run = json.load(open(os.path.join(out, "run.json")))
            outputs = run["export"]["checks"] if run.get("export") else []
            return {"status": "pass", "size": size, "seconds": seconds, "macs_reduction": run["reduction"]["macs"],
                    "frozen": sum(1 for g in run["groups"] if g["frozen"]), "groups": len(run["groups"]),
                    "outputs": len([c for c in outputs if c["check"].startswith("onnxruntime ==")]) or None}
        if res.returncode == 2 and len(err) == 1 and "Traceback" not in res.stderr:
            return {"status": "refused", "reason": err[0][7:][:300], "size": size, "seconds": seconds}
        if res.returncode in (137, -9) or "Killed" in res.stderr:
            return {"status": "fail", "reason": "killed by the OS (out of memory)", "code": res.returncode,
                    "size": size, "seconds": seconds}
        tail = (err or [ln for ln in res.stderr.splitlines() if ln.strip()][-1:] or ["no output"])[-1]
        return {"status": "fail", "reason": tail[:300], "code": res.returncode, "size": size, "seconds": seconds}


def markdown(results: dict, target: str = "flops=0.3") -> str:
    rows = results["rows"]
    counts = {s: sum(1 for r in rows.values() if r["status"] == s) for s in ("pass", "refused", "fail", "skipped")}
    timm = all(r["kind"] == "timm" for r in rows.values())
    md = [f"{'timm models' if timm else 'torchvision zoo'}: one-shot {target} on random data, export, per-output "
          f"parity — **{counts['pass']} pass, {counts['refused']} refused, {counts['fail']} fail, {counts['skipped']} "
          f"skipped** of {len(rows)}" + ("" if timm else " (Torch-Pruning reports 77/85 torchvision models)"), "",
          "| kind | model | status | input | MACs ↓ | frozen groups | seconds | reason |",
          "| --- | --- | --- | ---: | ---: | ---: | ---: | --- |"]
    for name, r in sorted(rows.items(), key=lambda kv: (kv[1]["kind"], kv[0])):
        macs = f"{r['macs_reduction']:.1%}" if "macs_reduction" in r else "–"
        frozen = f"{r['frozen']}/{r['groups']}" if "groups" in r else "–"
        md.append(f"| {r['kind']} | {name} | {r['status']} | {r.get('size', '–')} | {macs} | {frozen} | "
                  f"{r.get('seconds', 0):.0f} | {r.get('reason', '')} |")
    md.append(f"\nmachine: {results['machine']['cpu']}, {results['machine']['cores']} cores; command: "
              f"`{results['machine']['command']}`")
    return "\n".join(md) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=None, help="comma-separated model names")
    ap.add_argument("--max-params", type=float, default=100e6)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--timm", default=None, help="comma-separated timm model names: sweep those instead (zoo-timm)")
    ap.add_argument("--target", default="flops=0.3")
    args = ap.parse_args()
    sys.path.insert(0, os.path.dirname(DETECTORS))
    name = "zoo-timm" if args.timm else "zoo"
    models = [("timm", n, f"timm:{n}") for n in args.timm.split(",")] if args.timm else zoo()
    path = os.path.join(args.out, f"{name}.json")
    results = {"rows": {}, "machine": machine()}
    if os.path.isfile(path):
        saved = json.load(open(path))
        if not same_machine(saved.get("machine", {}), results["machine"]):
            sys.exit(f"{path} holds rows from another machine or command ({saved.get('machine', {}).get('cpu')}, "
                     f"`{saved.get('machine', {}).get('command')}`): a results file holds one command on one "
                     "machine; pass another --out, or remove it")
        results["rows"] = saved.get("rows", {})
    only = set(args.only.split(",")) if args.only else None
    for kind, model, spec in models:
        if (only and model not in only) or model in results["rows"]:
            continue
        n = params_of(spec)
        if n > args.max_params:
            row = {"status": "skipped", "reason": f"{n / 1e6:.0f} M parameters (over --max-params)"}
        else:
            row = run_one(spec, 64, args.timeout, args.target)
            if row["status"] != "pass":
                row = {**run_one(spec, 224, args.timeout, args.target), "at_64": row.get("reason")}
            if row["status"] == "refused" and "does not run on inputs of size" in row.get("reason", ""):
                row = {**run_one(spec, 320, args.timeout, args.target), "at_224": row.get("reason")}  # SSD300: ≥ 300²
        results["rows"][model] = {"kind": kind, "params": n, **row}
        print(f"{kind:<14} {model:<32} {row['status']:<8} {row.get('reason', '')[:100]}", flush=True)
        write_results(args.out, name, results, markdown(results, args.target))


if __name__ == "__main__":
    main()
