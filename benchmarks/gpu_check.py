"""The prepared GPU check: every CUDA path of prunekit run once, in one command, within a deadline.

    python benchmarks/gpu_check.py --out gpu-check --deadline 480        # on a machine with one CUDA GPU
    python benchmarks/gpu_check.py --out /tmp/gpu-dry --dry-run          # the same steps on the CPU, tiny

Steps (each a subprocess with what is left of the deadline as its timeout; a step that cannot start in time
is reported as skipped, a failing one with its exit code and the tail of its output):

- ``train``: ResNet-56 (shared weights) trained one epoch on ``--device cuda`` (bf16 autocast, channels_last):
  images/s and test accuracy before and after;
- ``search``: ``prunekit prune resnet56 --device cuda --target flops=0.5`` adaptive, 2 rounds of 1 epoch plus
  a 1-epoch final fine-tune;
- ``torchrun``: one round of the same under ``torchrun --nproc_per_node 1`` (nccl on a GPU);
- ``bench``: ``prunekit bench RUN --device cuda`` (fp32 / bf16 × contiguous / channels_last, batch 1/64/256)
  on the search's run and on one-shot torchvision resnet50 and mobilenet_v2 at 224² (dry run: resnet18 and
  mobilenet_v2 at 32²);
- ``latency_table``: a CUDA latency table of ResNet-56's layer shapes and its prediction error on 3 plans;
- ``pareto``: with time left, ``benchmarks/pareto.py`` at 1.5× with 3 epochs (knapsack and the
  Torch-Pruning peer, both with BN re-estimation and distillation) on the GPU.

``--dry-run`` runs every step on the CPU with ResNet-20, a generated 250-image ImageFolder and a few timed runs, so a
machine without a GPU (CI) proves the script itself works. Results: ``OUT/gpu_check.json`` and
``OUT/gpu_check.md``, rewritten after every step.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
STEPS = ("train", "search", "torchrun", "bench", "latency_table", "gpu_tests", "pareto")


def _tiny_folder(root: Path) -> str:
    """A labelled 10-class ImageFolder of 32×32 images (20 train + 5 test per class) for the dry run."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 20), ("test", 5)):
        for c in range(10):
            d = root / split / f"c{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                if not (d / f"{i}.png").exists():
                    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return str(root)


def _setup(dry: bool, out: Path) -> dict:
    from _common import shared

    model = "resnet20" if dry else "resnet56"
    return {"model": model, "weights": shared("weights", f"{model}-cifar10jpeg.pt"),
            "data": _tiny_folder(out / "tiny-data") if dry else shared("data", "cifar10-jpeg.tar.gz"),
            "device": "cpu" if dry else "cuda", "epochs": 0.5 if dry else 1.0, "runs": 3 if dry else 50,
            "batches": "1,8" if dry else "1,64,256", "size224": "3,32,32" if dry else "3,224,224",
            "tv": ("resnet18", "mobilenet_v2") if dry else ("resnet50", "mobilenet_v2")}


def step_train(s: dict, out: Path) -> dict:
    from prunekit.data import load_data
    from prunekit.compute.device import resolve_compute
    from prunekit.models import resolve_model
    from prunekit.compute.train import TrainSchedule, evaluate, train

    model, spec = resolve_model(s["model"], weights=s["weights"])
    bundle = load_data(s["data"], spec.input_size)
    compute = resolve_compute(s["device"], "auto")
    test = bundle.test
    before = evaluate(model, bundle, test, compute=compute)
    summary = train(model, bundle, TrainSchedule(epochs=s["epochs"], lr=0.01), compute)
    return {"device": summary["device"], "amp": summary["amp"], "images_per_s": summary["images"] /
            summary["seconds"], "seconds": summary["seconds"], "test_before": before,
            "test_after": evaluate(model, bundle, test, compute=compute), "test_images": len(test)}


def _cli(*args, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "prunekit.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def _prune_args(s: dict, out: Path, rounds: int) -> list:
    dry = s["device"] == "cpu"
    return ["prune", s["model"], "--weights", s["weights"], "--data", s["data"], "--target", "flops=0.5",
            "--device", s["device"], "--epochs-per-round", s["epochs"], "--max-rounds", rounds,
            "--final-epochs", s["epochs"], "--out", out, "--overwrite", "--log-format", "json",
            *(["--bn-images", "32", "--calib-images", "32", "--speed-batches", "none"] if dry else [])]


def _last_summary(text: str) -> dict:
    rows = [json.loads(ln) for ln in text.splitlines() if ln.startswith("{")]
    return next((r for r in reversed(rows) if r.get("event") == "summary"), {})


def step_search(s: dict, out: Path, timeout: float) -> dict:
    r = _cli(*_prune_args(s, out / "search-run", 2), timeout=timeout)
    if r.returncode:
        raise RuntimeError(f"prune exited {r.returncode}: {r.stderr[-1500:]}")
    run = json.loads((out / "search-run" / "run.json").read_text())
    return {"summary": _last_summary(r.stdout), "test_accuracy": run["accuracy"], "compute": run["compute"],
            "round_timing": run["search"]["round_timing"]}


def step_torchrun(s: dict, out: Path, timeout: float) -> dict:
    args = _prune_args(s, out / "torchrun-run", 1)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "-m",
                        "prunekit.cli", *map(str, args)], capture_output=True, text=True, timeout=timeout)
    if r.returncode:
        raise RuntimeError(f"torchrun exited {r.returncode}: {r.stderr[-1500:]}")
    return {"summary": _last_summary(r.stdout)}


def step_bench(s: dict, out: Path, timeout: float) -> dict:
    t0, results = time.monotonic(), {}
    runs = [("search-run", out / "search-run")]
    for name in s["tv"]:
        run_dir = out / f"tv-{name}"
        left = timeout - (time.monotonic() - t0)
        r = _cli("prune", f"torchvision:{name}", "--data", "random", "--input-size", s["size224"], "--target",
                 "flops=0.5", "--schedule", "oneshot", "--speed-batches", "none", "--calib-images", 16, "--out",
                 run_dir, "--overwrite", "--log-format", "json", timeout=left)
        if r.returncode:
            raise RuntimeError(f"prune torchvision:{name} exited {r.returncode}: {r.stderr[-1500:]}")
        runs.append((f"torchvision:{name}", run_dir))
    for name, run_dir in runs:
        if not (run_dir / "run.json").is_file():
            results[name] = {"skipped": "no run folder (the search step did not finish)"}
            continue
        r = _cli("bench", run_dir, "--device", s["device"], "--batch-sizes", s["batches"], "--runs", s["runs"],
                 "--warmup", 2, "--no-torch", "--json", "--log-format", "json",
                 timeout=timeout - (time.monotonic() - t0))
        if r.returncode:
            raise RuntimeError(f"bench {name} exited {r.returncode}: {r.stderr[-1500:]}")
        res = _last_event(r.stdout, "result")
        results[name] = [{"batch": b["batch"], "onnxruntime_speedup": b.get("speedup"),
                          "pytorch_cuda": b.get("pytorch_cuda")} for b in res["batches"]]
    return results


def _last_event(text: str, event: str) -> dict:
    rows = [json.loads(ln) for ln in text.splitlines() if ln.startswith("{")]
    return next(r for r in reversed(rows) if r.get("event") == event)


def step_latency_table(s: dict, out: Path) -> dict:
    import torch

    from prunekit.deploy.speed import measure_torch_cuda, model_latency_ms
    from prunekit.core.graph import find_groups
    from prunekit.core.trace import build_graph
    from prunekit.deploy.latency_table import LatencyTable, predict_ms
    from prunekit.core.costmodel import CostModel
    from prunekit.models import resolve_model
    from prunekit.core.allocate import plan_to_target
    from prunekit.core.scoring import score_groups
    from prunekit.core.surgery import apply_plan

    model, spec = resolve_model(s["model"], weights=s["weights"])
    runtime = "onnxruntime-cpu" if s["device"] == "cpu" else "cuda"
    table = LatencyTable(runtime, 1, path=str(out / "latency-table.json"))
    groups = find_groups(model, build_graph(model, spec.input_size), spec.classifier)
    scores = score_groups(model, groups, "attention-mean", 1.0, [torch.randn(32, *spec.input_size)])
    cost = CostModel.build(model, groups, spec.input_size).attach_latency(model, spec.input_size, table)

    def measured(m):
        if runtime == "cuda":
            return measure_torch_cuda({"m": m}, spec.input_size, 1, runs=s["runs"])["m"].p50_ms
        return model_latency_ms(m, spec.input_size, runtime, 1, runs=s["runs"])
    dense_ms, rows = measured(model), []
    for amount in (0.3, 0.5, 0.7):
        plan, _, _ = plan_to_target(scores, cost, "macs", amount, 8, True, None, "knapsack")
        pruned, _ = apply_plan(model, groups, plan, spec.input_size)
        pred = predict_ms(dense_ms, cost.dense_latency, cost.predict_latency(plan))
        real = measured(pruned)
        rows.append({"macs_removed": amount, "predicted_ms": pred, "measured_ms": real, "error": pred / real - 1})
    return {"runtime": runtime, "dense_ms": dense_ms, "shapes": len(table.entries), "plans": rows,
            "mean_abs_error": sum(abs(r["error"]) for r in rows) / len(rows)}


def step_pareto(s: dict, out: Path, timeout: float) -> dict:
    args = [sys.executable, str(HERE / "pareto.py"), "--model", s["model"], "--speedups", "1.5", "--rows",
            "knapsack+bn+kd,tp+bn+kd", "--epochs", 0.01 if s["device"] == "cpu" else 3, "--device", s["device"],
            "--tag", "gpu-check", "--out", out]
    r = subprocess.run(list(map(str, args)), capture_output=True, text=True, timeout=timeout)
    if r.returncode:
        raise RuntimeError(f"pareto exited {r.returncode}: {r.stderr[-1500:]}")
    return json.loads((out / f"pareto-{s['model']}-gpu-check.json").read_text())["rows"]


def step_gpu_tests(s: dict, out: Path, timeout: float) -> dict:
    """The ``gpu``-marked tests (fp16 / bf16 / off training, cuda:N, the CUDA latency table, torchrun with 1 and
    2 processes): on the CPU (dry run) they skip, which proves only that they are collected."""
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
                        str(HERE.parent / "tests")], capture_output=True, text=True, timeout=timeout,
                       cwd=HERE.parent)
    tail = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
    if r.returncode not in (0, 5):  # 5: nothing collected
        raise RuntimeError(f"gpu tests failed: {r.stdout[-2500:]}")
    return {"summary": tail}


def run_step(name: str, dry: bool, out: Path, timeout: float) -> dict:
    s = _setup(dry, out)
    if name == "train":
        return step_train(s, out)
    if name == "latency_table":
        return step_latency_table(s, out)
    return {"search": step_search, "torchrun": step_torchrun, "bench": step_bench, "gpu_tests": step_gpu_tests,
            "pareto": step_pareto}[name](s, out, timeout)


def markdown(report: dict) -> str:
    md = [f"# GPU check ({'dry run on the CPU' if report['dry_run'] else 'CUDA'})", "",
          f"device: {report.get('device')}; deadline {report['deadline_s']:.0f} s; "
          f"wall {report.get('wall_s', 0):.0f} s", "", "| step | status | seconds | result |",
          "| --- | --- | ---: | --- |"]
    for name in STEPS:
        st = report["steps"].get(name, {"status": "not run"})
        detail = json.dumps(st.get("result", st.get("error", st.get("reason", ""))), default=str)
        md.append(f"| {name} | {st['status']} | {st.get('seconds', 0):.0f} | {detail[:400]} |")
    return "\n".join(md) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--deadline", type=float, default=480.0, help="seconds for all steps together")
    ap.add_argument("--dry-run", action="store_true", help="the same steps on the CPU, tiny (no GPU needed)")
    ap.add_argument("--steps", default=",".join(STEPS))
    ap.add_argument("--step", help=argparse.SUPPRESS)  # internal: run one step in this process
    ap.add_argument("--timeout", type=float, default=600.0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.step:
        print(json.dumps({"result": run_step(args.step, args.dry_run, out, args.timeout)}, default=float))
        return
    import torch

    report = {"dry_run": args.dry_run, "deadline_s": args.deadline, "steps": {},
              "device": "cpu" if args.dry_run else (torch.cuda.get_device_name(0) if torch.cuda.is_available()
                                                    else "no CUDA GPU")}
    if not args.dry_run and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA GPU is available to PyTorch here (use --dry-run to check the script)")
    t0 = time.monotonic()
    for name in args.steps.split(","):
        left = args.deadline - (time.monotonic() - t0)
        if left < 20:
            report["steps"][name] = {"status": "skipped", "reason": f"deadline ({args.deadline:.0f} s) reached"}
            continue
        t = time.monotonic()
        cmd = [sys.executable, __file__, "--out", str(out), "--step", name, "--timeout", str(left - 5)]
        try:
            r = subprocess.run(cmd + (["--dry-run"] if args.dry_run else []), capture_output=True, text=True,
                               timeout=left)
            if r.returncode:
                report["steps"][name] = {"status": "failed", "rc": r.returncode, "error": r.stderr[-2000:]}
            else:
                report["steps"][name] = {"status": "ok", "result": json.loads(r.stdout.splitlines()[-1])["result"]}
        except subprocess.TimeoutExpired:
            report["steps"][name] = {"status": "stopped", "reason": f"deadline: killed after {left:.0f} s"}
        report["steps"][name]["seconds"] = time.monotonic() - t
        report["wall_s"] = time.monotonic() - t0
        (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
        (out / "gpu_check.md").write_text(markdown(report))
        print(f"gpu_check: {name}: {report['steps'][name]['status']} ({report['steps'][name]['seconds']:.0f} s)",
              flush=True)
    print(markdown(report))
    sys.exit(0 if all(st["status"] in ("ok", "skipped") for st in report["steps"].values()) else 1)


if __name__ == "__main__":
    main()
