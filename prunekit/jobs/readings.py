"""What a one-shot job reads at each stage (after surgery, after BatchNorm re-estimation, after fine-tuning):
test accuracy where the test split has labels, and fidelity to the dense model on held-out images always
(the only reading a label-free run has: :mod:`prunekit.compute.fidelity`), per output."""
from __future__ import annotations

import torch

from prunekit.compute.distill import loss_kinds
from prunekit.compute.fidelity import fidelity, fidelity_score
from prunekit.compute.train import evaluate
from prunekit.config.choices import parse_distill_loss
from prunekit.data.inputs import spread
from prunekit.progress import info


class StageReadings:
    def __init__(self, dense: torch.nn.Module, bundle, compute, eval_images: int | None, distill_loss: str,
                 classes: int | None):
        self.dense, self.bundle, self.compute = dense, bundle, compute
        test = None if bundle.synthetic or bundle.test is None or not len(bundle.test) else bundle.test
        if test is not None and eval_images is not None:
            test = test.subset(spread(len(test), eval_images))
        self.test = test
        self.labelled = test is not None and test.labels is not None
        self.accuracy: dict = {}
        self.fidelity: dict = {}
        if test is None:
            return
        x, _ = next(bundle.batches(test.subset(spread(len(test), 2)), 2))
        with torch.no_grad():
            self.kinds = loss_kinds(dense.eval()(x), classes, parse_distill_loss(distill_loss))
        self.fidelity = {"split": "held-out" if not self.labelled else "test", "images": len(test),
                         "kinds": self.kinds}
        if self.labelled:
            info("evaluating on the test split")
            self.accuracy = {"split": "test", "images": len(test),
                             "dense": evaluate(dense, bundle, test, compute=compute)}
            if self.accuracy["dense"] is None:  # outputs that are not class scores: fidelity only
                self.labelled, self.accuracy = False, {}

    def read(self, stage: str, model: torch.nn.Module) -> None:
        """Record ``model``'s readings as ``stage`` (``pruned``, ``pruned_bn``, ``pruned_finetuned``)."""
        if self.test is None:
            return
        if self.labelled:
            self.accuracy[stage] = evaluate(model, self.bundle, self.test, compute=self.compute)
        self.fidelity[stage] = fidelity(self.dense, model, self.bundle, self.test, self.kinds, self.compute)


def validation_judge(job, readings: StageReadings, images: int = 500):
    """What BatchNorm re-estimation and the fine-tune are judged by (either is undone when it reads worse):
    accuracy on up to ``images`` validation images where they have labels, else fidelity to the dense model
    (:func:`prunekit.compute.fidelity.fidelity_score`); None without a validation split."""
    bundle = job.bundle
    if bundle.synthetic or bundle.val is None or not len(bundle.val) or not hasattr(readings, "kinds"):
        return None
    val = bundle.val.subset(spread(len(bundle.val), min(images, len(bundle.val))))
    measure = evaluate if val.labels is not None and readings.labelled else fidelity_score(job.model, readings.kinds)
    return lambda model: measure(model, bundle, val, compute=job.compute)
