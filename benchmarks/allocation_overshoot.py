"""How far an aligned plan overshoots a params / FLOPs target: Algorithm 3 threshold + rounding vs the
knapsack, on a CIFAR ResNet with the shared weights and real calibration images (no training, seconds).

    python benchmarks/allocation_overshoot.py --model resnet56 --targets params=0.4,flops=0.5 --round-to 16,8
"""
from __future__ import annotations

import argparse

from _common import machine, shared, write_results

from prunekit.core.allocate import plan_to_target
from prunekit.config import parse_target
from prunekit.data import load_data
from prunekit.core.graph import find_groups
from prunekit.core.trace import build_graph
from prunekit.core.costmodel import CostModel, reduction
from prunekit.models import resolve_model
from prunekit.core.scoring import score_groups


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet56")
    ap.add_argument("--targets", default="params=0.4,flops=0.5")
    ap.add_argument("--round-to", default="16,8")
    ap.add_argument("--criterion", default="attention-mean")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    model, spec = resolve_model(args.model, weights=shared("weights", f"{args.model}-cifar10jpeg.pt"))
    bundle = load_data(shared("data", "cifar10-jpeg.tar.gz"), spec.input_size)
    groups = find_groups(model, build_graph(model, spec.input_size), spec.classifier)
    scores = score_groups(model, groups, args.criterion, 1.0,
                          (x for x, _ in bundle.batches(bundle.calibration(512), 128)))
    cost = CostModel.build(model, groups, spec.input_size)
    rows = []
    for text in args.targets.split(","):
        target = parse_target(text)
        for rt in (int(r) for r in args.round_to.split(",")):
            for method in ("threshold", "knapsack", "knapsack:score"):
                plan, _, used = plan_to_target(scores, cost, target.kind, target.amount, rt, False, None,
                                               method.split(":")[0], (method.split(":") + ["layers"])[1])
                rows.append({"target": text, "round_to": used, "method": method,
                             "params": reduction(cost, plan, "params"), "macs": reduction(cost, plan, "macs"),
                             "score_lost": float(sum(scores[r][i].sum() for r, i in plan.items()))})
    md = [f"{args.model} ({args.criterion} scores on 512 training images), one-shot plans, no training", "",
          "| target | round_to | allocation | params ↓ | MACs ↓ | score lost |",
          "| --- | ---: | --- | ---: | ---: | ---: |"]
    md += [f"| {r['target']} | {r['round_to']} | {r['method']} | {r['params']:.1%} | {r['macs']:.1%} | "
           f"{r['score_lost']:.1f} |" for r in rows]
    write_results(args.out, f"allocation_overshoot-{args.model}", {"rows": rows, "machine": machine()},
                  "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
