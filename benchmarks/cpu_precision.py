"""Retraining at the CPU's native precision (issue 24): the same pruned ResNet-56 fine-tuned for the same epochs,
distilled from the dense model, in fp32 (contiguous, how prunekit trained on the CPU before) and in bf16
autocast + channels_last (``--amp auto`` on a CPU with AMX or AVX-512 BF16): seconds per epoch and test
accuracy side by side. The pruned model is the one-shot ``speedup=S`` plan for ``--runtime`` without a
fine-tune, made once; each precision fine-tunes its own copy from the same seed.

    python benchmarks/cpu_precision.py --epochs 1 --runtime openvino-cpu
"""
from __future__ import annotations

import copy

from _common import machine, pruned_once, recovery_parser, write_results

from prunekit.compute.device import resolve_compute
from prunekit.compute.recovery import recalibrate, teacher_for, training_schedule
from prunekit.compute.train import evaluate, finetune
from prunekit.config import TrainingConfig
from prunekit.data import load_data
from prunekit.progress import configure
from prunekit.runtimes import cpu_info


def main() -> None:
    args = recovery_parser(__doc__.splitlines()[0]).parse_args()
    configure("text")
    if not cpu_info().native_bf16:
        raise SystemExit(f"{cpu_info().model} has no native bf16 units: nothing to compare")
    run, pruned, dense, spec, data = pruned_once(args)
    bundle = load_data(data, spec.input_size)
    training = TrainingConfig()
    rows = []
    for amp in ("off", "bf16"):
        model, compute = copy.deepcopy(pruned), resolve_compute("cpu", amp)
        recalibrate(model, bundle, training, args.seed, compute)
        s = finetune(model, bundle, training_schedule(training, args.epochs, args.seed), compute,
                     teacher_for(dense, bundle, training))
        rows.append({"amp": amp, "memory_format": compute.to_dict()["memory_format"], "epochs": args.epochs,
                     "seconds": s["seconds"], "seconds_per_epoch": s["seconds"] / args.epochs,
                     "teacher_s": s["distill"]["teacher_s"], "steps": s["steps"],
                     "acc": evaluate(model, bundle, bundle.test, compute=compute)})
        print(rows[-1], flush=True)
    fp32, bf16 = rows
    m = machine()
    md = [f"{args.model} pruned to {args.speedup:g}× on {args.runtime} (one-shot, MACs −"
          f"{run['reduction']['macs']:.1%}), the same model fine-tuned {args.epochs:g} epoch(s) distilled from the "
          f"dense model ({run['accuracy']['dense']:.2f} %), seed {args.seed}, full test split", "",
          "| training precision | memory format | s / epoch | test acc |", "| --- | --- | ---: | ---: |"]
    md += [f"| {'fp32' if r['amp'] == 'off' else 'bf16 autocast'} | {r['memory_format']} | "
           f"{r['seconds_per_epoch']:.0f} | {r['acc']:.2f} % |" for r in rows]
    md.append(f"\nbf16 is {fp32['seconds'] / bf16['seconds']:.2f}× faster per epoch, "
              f"{bf16['acc'] - fp32['acc']:+.2f} points. machine: {m['cpu']} ({cpu_info().isa}), {m['cores']} "
              f"cores; command: `{m['command']}`")
    write_results(args.out, f"cpu_precision-{args.model}", {"rows": rows, "machine": m, "args": vars(args),
                                                           "pruned": run["reduction"]}, "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
