"""Does the search earn its cost? Adaptive search vs fixed-rate vs one-shot + fine-tune, at equal epochs.

Every run gets the same total retraining (``--budget-epochs``, with ``--train-fraction`` of the training split
per epoch) and seed, ResNet-56 from the shared weights, and reports test accuracy on the full test split:

- adaptive attention-mean / l1: the search (size steps), half the budget in rounds, half to fine-tune the
  delivered model;
- fixed 5 % attention (IAP) / l1 (ILP): the paper's fixed-rate baselines, same split;
- one-shot attention-mean / l1 / Torch-Pruning group-norm, then fine-tuning with the whole budget.

    python benchmarks/compare.py --preset cpu      # about an hour per target on 2 CPU cores
    python benchmarks/compare.py --preset gpu      # the GPU preset (--device cuda), 15 epochs
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

from _common import machine, shared, write_results

import prunekit
from prunekit.progress import configure

PRESETS = {"cpu": {"budget": 1.0, "train_fraction": 1.0, "device": "cpu"},
           "gpu": {"budget": 15.0, "train_fraction": 1.0, "device": "cuda"}}
RUNS = [  # (name, schedule, criterion, extra config)
    ("adaptive attention-mean", "adaptive", "attention-mean", {}),
    ("adaptive l1", "adaptive", "l1", {}),
    ("fixed 5 % attention (IAP)", "fixed", "attention-mean", {}),
    ("fixed 5 % l1 (ILP)", "fixed", "l1", {}),
    ("one-shot attention-mean + fine-tune", "oneshot", "attention-mean", {}),
    ("one-shot l1 + fine-tune", "oneshot", "l1", {}),
    ("one-shot group-norm (Torch-Pruning) + fine-tune", "oneshot", "group-norm", {}),
]
VARIANTS = [  # the search's own choices, at the same budget (--variants)
    ("adaptive attention-mean, threshold steps (λ 0.05)", "adaptive", "attention-mean",
     {"step_mode": "threshold", "lam": 0.05}),
    ("adaptive attention-mean, --max-step 0.1 --group-cap 0.5", "adaptive", "attention-mean",
     {"max_step": 0.1, "group_cap": 0.5}),
    ("adaptive attention-mean, --max-step 0.1 --threshold-scale per-layer", "adaptive", "attention-mean",
     {"max_step": 0.1, "threshold_scale": "per-layer"}),
    ("adaptive attention-mean, --max-step 0.25 (fewer, longer rounds)", "adaptive", "attention-mean",
     {"max_step": 0.25}),
    ("adaptive group-norm (Torch-Pruning importance), --max-step 0.1", "adaptive", "group-norm", {"max_step": 0.1}),
    ("adaptive group-norm, --max-step 0.25", "adaptive", "group-norm", {"max_step": 0.25}),
    ("adaptive group-norm, --max-step 0.25 --final-epochs 0.75", "adaptive", "group-norm",
     {"max_step": 0.25, "final_epochs": 0.75}),
    ("adaptive attention-mean, --max-step 0.25 --val-images 1000", "adaptive", "attention-mean",
     {"max_step": 0.25, "val_images": 1000}),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    ap.add_argument("--target", default="flops=0.5")
    ap.add_argument("--budget-epochs", type=float, default=None, help="override the preset's budget")
    ap.add_argument("--runs", default=None,
                    help="';'-separated parts of run names: run only the rows whose name holds one")
    ap.add_argument("--round-to", default="auto")
    ap.add_argument("--variants", action="store_true", help="run the search variants instead of the main table")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--tag", default="", help="suffix of the results file names (e.g. for a --runs subset)")
    args = ap.parse_args()
    configure("text")
    preset = dict(PRESETS[args.preset])
    budget = args.budget_epochs or preset["budget"]
    rows = []
    for name, schedule, criterion, extra in (VARIANTS if args.variants else RUNS):
        if args.runs and not any(k.strip() in name for k in args.runs.split(";")):
            continue
        common = dict(model="resnet56", weights=shared("weights", "resnet56-cifar10jpeg.pt"),
                      data=shared("data", "cifar10-jpeg.tar.gz"), target=args.target, criterion=criterion,
                      seed=args.seed, device=preset["device"], round_to=args.round_to, calib_images=512,
                      speed_batches=(32,), export=False, **extra)
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "run")
            if schedule == "oneshot":
                cfg = prunekit.PruneConfig(**common, out=out, schedule="oneshot", finetune_epochs=budget)
            else:
                cfg = prunekit.PruneConfig(**common, out=out, schedule=schedule, budget_epochs=budget,
                                           train_fraction=preset["train_fraction"], rate=0.05, max_rounds=12)
            t0 = time.perf_counter()
            print(f"== {name}", flush=True)
            run = prunekit.prune(cfg)
            wall = time.perf_counter() - t0
        acc = run["accuracy"]
        search = run.get("search") or {}
        epochs = search.get("epochs", {}).get("total", run.get("finetune", {}) and budget)
        rows.append({"run": name, "macs_reduction": run["reduction"]["macs"],
                     "params_reduction": run["reduction"]["params"],
                     "test_acc": acc.get("pruned_finetuned", acc["pruned"]), "dense_acc": acc["dense"],
                     "epochs": epochs, "rounds": search.get("rounds"), "wall_s": wall,
                     "overhead_share": search.get("round_timing", {}).get("overhead_share"),
                     "speedup_b32": run["speed"]["batches"][0]["speedup"] if run.get("speed") else None})
        print(rows[-1], flush=True)
    if not rows:
        raise SystemExit(f"no run matches --runs {args.runs!r}")
    md = [f"ResNet-56 (shared weights) {args.target}, `--round-to {args.round_to}`, preset {args.preset}: "
          f"{budget:g} epoch(s) of retraining for every run, seed {args.seed}; test accuracy on the full test "
          f"split (dense {rows[0]['dense_acc']:.2f} %).", "",
          "| run | epochs | rounds | MACs ↓ | params ↓ | test acc | speedup b32 (ORT) | search overhead | wall |",
          "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        oh = f"{r['overhead_share']:.0%}" if r["overhead_share"] is not None else "–"
        md.append(f"| {r['run']} | {r['epochs']:g} | {r['rounds'] if r['rounds'] is not None else '–'} | "
                  f"{r['macs_reduction']:.1%} | {r['params_reduction']:.1%} | {r['test_acc']:.2f} % | "
                  f"{r['speedup_b32']:.2f}× | {oh} | {r['wall_s'] / 60:.1f} min |")
    m = machine()
    md.append(f"\nSearch overhead = share of the rounds' wall time not spent training (scoring, planning, surgery, "
              f"verification, validation, checkpoint). Machine: {m['cpu']}, {m['cores']} cores; commit "
              f"{m['commit']}; command: `python benchmarks/{m['command']}`")
    tag = ("-variants" if args.variants else "") + (f"-{args.tag}" if args.tag else "")
    write_results(args.out, f"compare-{args.preset}-{args.target.replace('=', '')}{tag}", {"rows": rows, "machine": m},
                  "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
