"""Recovery without labels (issue 25): the same pruned ResNet-56 (shared weights, one-shot ``speedup=S`` planned
for ``--runtime``, no fine-tune) retrained for the same epochs with labels used (distillation α = 0.9 +
cross-entropy) and with labels ignored (distillation from the dense model alone, α = 1), each from the same
seed; test accuracy and fidelity to the dense model side by side.

    python benchmarks/label_free.py --epochs 1 --runtime openvino-cpu
"""
from __future__ import annotations

import copy

from _common import machine, pruned_once, recovery_parser, write_results

from prunekit.compute.device import resolve_compute
from prunekit.compute.fidelity import fidelity
from prunekit.compute.recovery import recalibrate, teacher_for, training_schedule
from prunekit.compute.train import evaluate, finetune
from prunekit.config import TrainingConfig
from prunekit.data import load_data
from prunekit.progress import configure


def main() -> None:
    ap = recovery_parser(__doc__.splitlines()[0])
    ap.add_argument("--temperatures", default="4", help="distillation temperatures to try label-free")
    args = ap.parse_args()
    configure("text")
    run, pruned, dense, spec, data = pruned_once(args)
    compute = resolve_compute("auto", "auto")
    rows = []
    variants = [("labels used", "use", 4.0)] + [("labels ignored", "ignore", float(t))
                                                for t in args.temperatures.split(",")]
    for name, labels, temperature in variants:
        bundle = load_data(data, spec.input_size, labels=labels)
        training = TrainingConfig(labels=labels, distill_temperature=temperature)
        model = copy.deepcopy(pruned)
        recalibrate(model, bundle, training, args.seed, compute)
        s = finetune(model, bundle, training_schedule(training, args.epochs, args.seed, spec.num_classes), compute,
                     teacher_for(dense, bundle, training))
        fid = fidelity(dense, model, bundle, bundle.test, {"output": "kl"}, compute)["output"]
        rows.append({"variant": name, "temperature": temperature, "alpha": s["distill"]["alpha"],
                     "acc": evaluate(model, bundle, bundle.test, compute=compute), "seconds": s["seconds"],
                     "top1_agreement": fid["top1_agreement"]})
        print(rows[-1], flush=True)
    m = machine()
    md = [f"{args.model} pruned to {args.speedup:g}× on {args.runtime} (one-shot, MACs "
          f"−{run['reduction']['macs']:.1%}, after BN re-estimation {run['accuracy']['pruned_bn']:.2f} %), each "
          f"variant retrained {args.epochs:g} epoch(s) from the same pruned model and seed ({compute.amp_words}); "
          "dense "
          f"{run['accuracy']['dense']:.2f} %, full test split", "",
          "| retraining | T | α | test acc | top-1 agreement with dense |", "| --- | ---: | ---: | ---: | ---: |"]
    md += [f"| {r['variant']} | {r['temperature']:g} | {r['alpha']:g} | {r['acc']:.2f} % | "
           f"{r['top1_agreement']:.2f} % |" for r in rows]
    md.append(f"\nmachine: {m['cpu']}, {m['cores']} cores; command: `{m['command']}`")
    write_results(args.out, f"label_free-{args.model}", {"rows": rows, "machine": m, "args": vars(args),
                                                        "pruned": run["reduction"]}, "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
