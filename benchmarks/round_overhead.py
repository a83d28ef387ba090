"""Where a search round's time goes besides training: each step of one round timed alone, on ResNet-56.

Prepares the search as ``prunekit prune`` would (shared weights, CIFAR-10), then times, for a 25 % size step
from the dense model: the dependency graph, groups, scores on the calibration images, the cost model, the
threshold, surgery, the masked == pruned check, validation (whole split and ``--val-images``), the checkpoint
and the size measurement. Two passes, to show the timings are stable (setup, done once per search, is not
timed).

    python benchmarks/round_overhead.py                  # about 2 minutes on 2 CPU cores
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time

from _common import machine, shared, write_results

import prunekit
from prunekit.core.graph import find_groups
from prunekit.core.trace import build_graph
from prunekit.core.costmodel import CostModel
from prunekit.jobs.search.planner import RoundPlanner
from prunekit.core.scoring import score_groups
from prunekit.jobs.search.context import prepare
from prunekit.runs.storage import save_pruned
from prunekit.core.surgery import apply_plan, verify_masked_equals_pruned
from prunekit.compute.train import evaluate


def one_pass(ctx, small, folder: str) -> dict[str, float]:
    """Every step of one round from the dense model, each timed; seconds by step."""
    cfg, base, size, planner = ctx.cfg, ctx.dense, ctx.spec.input_size, RoundPlanner(ctx)
    t: dict[str, float] = {}

    def timed(name, f):
        t0 = time.perf_counter()
        out = f()
        t[name] = time.perf_counter() - t0
        return out
    dg = timed("graph", lambda: build_graph(base, size))
    groups = timed("groups", lambda: find_groups(base, dg, ctx.spec.classifier))
    scores = timed("score", lambda: score_groups(base, groups, cfg.criterion, cfg.p, ctx.calib_batches,
                                                 compute=ctx.compute, seed=0, reference=ctx.info["scales"]))
    cost = timed("cost model", lambda: CostModel.build(base, groups, size))
    T = timed("threshold", lambda: planner.step_threshold(scores, cost, 0.25))
    plan = {k: v for k, v in planner.plan(scores, cost, T).items() if v}
    pruned, history = timed("surgery", lambda: apply_plan(base, groups, plan, size))
    timed("masked == pruned", lambda: verify_masked_equals_pruned(base, pruned, groups, plan, ctx.verify_inputs,
                                                                  cfg.atol))
    timed(f"validation ({len(ctx.val)})", lambda: evaluate(pruned, ctx.bundle, ctx.val, compute=ctx.compute))
    timed(f"validation ({len(small)})", lambda: evaluate(pruned, ctx.bundle, small, compute=ctx.compute))
    timed("checkpoint", lambda: save_pruned(os.path.join(folder, "round.pt"), pruned, ctx.spec, history))
    timed("measure", lambda: ctx.measure(pruned))
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--val-images", type=int, default=1000, help="the subset timed beside the whole split")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        cfg = prunekit.PruneConfig(model="resnet56", weights=shared("weights", "resnet56-cifar10jpeg.pt"),
                                   data=shared("data", "cifar10-jpeg.tar.gz"), target="flops=0.5",
                                   out=os.path.join(d, "run"), speed_batches=(), device="cpu")
        ctx = prepare(cfg, cfg.parsed_target, True, None)
        small = dataclasses.replace(ctx, cfg=dataclasses.replace(cfg, val_images=args.val_images)).val
        passes = []
        for _ in range(2):
            passes.append(one_pass(ctx, small, d))
            print({k: round(v, 2) for k, v in passes[-1].items()}, flush=True)
    md = ["One ResNet-56 search round (25 % size step from the dense model, 512 calibration images) on this CPU, "
          "each step timed alone; seconds.", "", "| step | first pass | second pass |", "| --- | ---: | ---: |"]
    md += [f"| {k} | {passes[0][k]:.2f} | {passes[1][k]:.2f} |" for k in passes[0]]
    m = machine()
    md.append(f"\nMachine: {m['cpu']}, {m['cores']} cores; commit {m['commit']}; command: "
              f"`python benchmarks/{m['command']}`")
    write_results(args.out, "round_overhead-resnet56", {"passes": passes, "machine": m}, "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
