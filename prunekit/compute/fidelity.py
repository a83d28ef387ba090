"""Fidelity to the dense model, when there are no labels to measure accuracy with: how closely a pruned model's
outputs follow the dense model's on held-out images, per output, by what the output is
(:func:`prunekit.compute.distill.loss_kinds`):

- class scores (N, C): **top-1 agreement**, the share of images whose top class is the dense model's;
- class maps (N, C, H, W): **pixel agreement** (the per-pixel argmax equals the dense one) and **mIoU** of the
  per-pixel argmax against the dense argmax (mean over the classes present in either);
- any other output: **relative L2 error**, ‖pruned − dense‖ / ‖dense‖ over all the held-out outputs.

Percentages (agreement, mIoU) and a ratio (relative L2). Computed in fp32 on ``compute``'s device.
"""
from __future__ import annotations

import numpy as np
import torch

from prunekit.compute.device import CPU, Compute, on_device
from prunekit.outputs import named_outputs


class _Tally:
    """Running sums of one output's agreement with the dense model."""

    def __init__(self, kind: str):
        self.kind, self.n, self.same = kind, 0, 0
        self.inter: np.ndarray | None = None
        self.union: np.ndarray | None = None
        self.err = self.ref = 0.0

    def add(self, got: torch.Tensor, ref: torch.Tensor) -> None:
        got, ref = got.float(), ref.float()
        if self.kind != "kl":
            self.err += float((got - ref).pow(2).sum())
            self.ref += float(ref.pow(2).sum())
            return
        a, b = got.argmax(1), ref.argmax(1)
        self.n += a.numel()
        self.same += int((a == b).sum())
        if got.dim() > 2:
            c = got.shape[1]
            a1, b1 = torch.nn.functional.one_hot(a.flatten(), c), torch.nn.functional.one_hot(b.flatten(), c)
            inter, union = (a1 & b1).sum(0).cpu().numpy(), (a1 | b1).sum(0).cpu().numpy()
            self.inter = inter if self.inter is None else self.inter + inter
            self.union = union if self.union is None else self.union + union

    def result(self) -> dict:
        if self.kind != "kl":
            return {"rel_l2": float(np.sqrt(self.err / self.ref)) if self.ref > 0 else 0.0}
        if self.union is None:
            return {"top1_agreement": 100.0 * self.same / max(self.n, 1)}
        present = self.union > 0
        return {"pixel_agreement": 100.0 * self.same / max(self.n, 1),
                "miou": 100.0 * float(np.mean(self.inter[present] / self.union[present])) if present.any() else 100.0}


def fidelity(dense: torch.nn.Module, model: torch.nn.Module, bundle, ds, kinds: dict[str, str],
             compute: Compute = CPU, batch_size: int = 100) -> dict[str, dict]:
    """{output name: its fidelity metrics} of ``model`` against ``dense`` on ``ds`` (un-augmented)."""
    tallies = {name: _Tally(kind) for name, kind in kinds.items()}
    dense.eval()
    model.eval()
    with on_device(model, compute), on_device(dense, compute), torch.no_grad():
        for x, _ in bundle.batches(ds, batch_size, device=compute.device, memory_format=compute.memory_format):
            ref = dict(named_outputs(dense(x)))
            for name, got in named_outputs(model(x)):
                tallies[name].add(got, ref[name])
    return {name: t.result() for name, t in tallies.items()}


def agreement(metrics: dict) -> float:
    """One output's fidelity as one percentage (100: the dense model's own outputs): top-1 agreement for class
    scores, mIoU against the dense argmax for class maps, 100 · (1 − relative L2 error) otherwise (at least 0)."""
    if "miou" in metrics:
        return metrics["miou"]
    if "top1_agreement" in metrics:
        return metrics["top1_agreement"]
    return max(0.0, 100.0 * (1.0 - metrics["rel_l2"]))


def fidelity_score(dense: torch.nn.Module, kinds: dict[str, str]):
    """An evaluator with :func:`prunekit.compute.train.evaluate`'s signature that measures, instead of accuracy,
    the worst output's :func:`agreement` with ``dense`` (what a ``fidelity=`` target bounds: no labels needed)."""

    def score(model, bundle, ds, compute: Compute = CPU, batch_size: int = 100) -> float | None:
        if ds is None or len(ds) == 0:
            return None
        per_output = fidelity(dense, model, bundle, ds, kinds, compute, batch_size)
        return min(agreement(m) for m in per_output.values())

    return score
