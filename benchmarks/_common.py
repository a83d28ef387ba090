"""Shared bits of the benchmark scripts: where the shared data and weights are, and writing results."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PRUNEKIT_SHARED", ROOT.parent / "shared"))


def shared(*parts: str) -> str:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        sys.exit(f"benchmark needs {path} (the shared data and weights; set PRUNEKIT_SHARED)")
    return str(path)


def machine() -> dict:
    import onnxruntime
    import torch

    from prunekit.runtimes import cpu_info

    cpu = f"{cpu_info().model} ({cpu_info().isa})"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip()
    except OSError:
        commit = ""
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__, "python": platform.python_version(), "commit": commit,
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])}


def table(headers: list[str], rows: list[list], right: int = 1) -> list[str]:
    """A Markdown table: ``headers``, then ``rows`` (already formatted cells); the first ``right`` columns are
    left-aligned, the rest right-aligned (numbers)."""
    align = ["---" if i < right else "---:" for i in range(len(headers))]
    return [f"| {' | '.join(headers)} |", f"| {' | '.join(align)} |"] + [
        f"| {' | '.join(str(c) for c in r)} |" for r in rows]


def write_results(out_dir: str, name: str, data: dict, markdown: str) -> None:
    """The one results writer: ``{name}.json`` and ``{name}.md`` in ``out_dir``, each holding what one command
    measured on one machine. The machine (CPU, cores, library versions, commit) and the exact command are
    stamped into the JSON (``machine``) and under the Markdown, unless the script already wrote them."""
    m = data.setdefault("machine", machine())
    if "command: `" not in markdown:
        markdown = f"{markdown.rstrip()}\n\nmachine: {m['cpu']}, {m['cores']} cores; command: `{m['command']}`\n"
    os.makedirs(out_dir, exist_ok=True)
    for suffix, text in ((".json", json.dumps(data, indent=2, default=float)), (".md", markdown)):
        path = os.path.join(out_dir, name + suffix)
        with open(path + ".tmp", "w") as f:
            f.write(text)
        os.replace(path + ".tmp", path)
    print(markdown)


def same_machine(saved: dict, now: dict) -> bool:
    """Whether a results file's rows may be extended by this run (a resumable benchmark): the same CPU, core
    count, library versions and command."""
    keys = ("cpu", "cores", "torch", "onnxruntime", "command")
    return all(saved.get(k) == now.get(k) for k in keys)


def recovery_parser(description: str):
    """The options of a benchmark that retrains one pruned model several ways (cpu_precision, label_free)."""
    import argparse

    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--model", default="resnet56")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--speedup", type=float, default=1.5)
    ap.add_argument("--runtime", default="openvino-cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results")
    return ap


def pruned_once(args):
    """(run record, pruned model, dense model, spec, data spec): the shared weights pruned one-shot to
    ``speedup=args.speedup`` on ``args.runtime`` at batch 32, no fine-tune: the model each variant retrains."""
    import tempfile

    import prunekit
    from prunekit.models import resolve_model

    data, weights = shared("data", "cifar10-jpeg.tar.gz"), shared("weights", f"{args.model}-cifar10jpeg.pt")
    dense, spec = resolve_model(args.model, weights=weights)
    with tempfile.TemporaryDirectory() as d:
        run = prunekit.prune(prunekit.PruneConfig(
            model=args.model, weights=weights, data=data, target=f"speedup={args.speedup}", schedule="oneshot",
            runtime=args.runtime, latency_threads=2, speed_batches=(32,), out=os.path.join(d, "run"),
            seed=args.seed))
        return run, prunekit.load(os.path.join(d, "run")), dense, spec, data
