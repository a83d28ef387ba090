"""How a job recovers a pruned model's accuracy, from the user's :class:`~prunekit.config.TrainingConfig`:
BatchNorm re-estimation after every surgery (:mod:`prunekit.compute.bnstats`), distillation from the dense model in
every retraining (:mod:`prunekit.compute.distill`), and the :class:`~prunekit.compute.train.TrainSchedule` of a
fine-tune.
Both jobs (one-shot and the search's rounds, top-up and final fine-tune) call these, so they recover alike."""
from __future__ import annotations

import torch

from prunekit.compute.bnstats import reestimate_bn
from prunekit.compute.distill import frozen_teacher, resolve_distill
from prunekit.progress import info
from prunekit.compute.train import TrainSchedule


def recalibrate(model, bundle, training, seed: int, compute, judge=None) -> dict | None:
    """Re-estimate ``model``'s BatchNorm statistics on ``training.bn_images`` real training images (none for
    synthetic data: random pixels would only teach BatchNorm noise). Returns what it did, or None.

    ``judge(model) -> float | None`` (higher is better: accuracy or fidelity on validation images), when given,
    is read before and after: statistics that read worse are put back (``kept`` False). A dense model whose own
    statistics are not its data's (an untrained network, or one trained elsewhere) is what that protects."""
    if training.bn_images <= 0 or bundle is None or bundle.synthetic:
        return None
    before = judge(model) if judge is not None else None
    saved = {k: v.clone() for k, v in model.named_buffers()} if before is not None else None  # all it changes
    done = reestimate_bn(model, bundle, training.bn_images, training.batch_size, seed=seed, compute=compute)
    if done is None:
        return None
    info(f"BatchNorm statistics re-estimated on {done['images']} training images ({done['seconds']:.1f} s)",
         "bn_reestimate", **done)
    if before is not None:
        after = judge(model)
        done.update(judged_before=before, judged_after=after, kept=after is None or after >= before)
        if not done["kept"]:
            with torch.no_grad():
                for k, v in model.named_buffers():
                    v.copy_(saved[k])
            info(f"the re-estimated statistics read worse on validation images ({after:.2f} vs {before:.2f}): "
                 "kept the model's own", "bn_reestimate")
    return done


def teacher_for(dense, bundle, training):
    """A frozen copy of the dense model to distil from, or None (``--distill off``, or nothing real to train on:
    random pixels). Unlabelled images are enough: the dense model's outputs are the targets."""
    if not resolve_distill(training.distill, not bundle.synthetic):
        if not bundle.has_labels and not bundle.synthetic:
            from prunekit.errors import PrunekitError

            raise PrunekitError("retraining without labels is distillation from the dense model: leave --distill "
                                "on (or auto)")
        return None
    return frozen_teacher(dense)


def training_schedule(training, epochs: float, seed: int, classes: int | None = None, **overrides) -> TrainSchedule:
    """The :class:`TrainSchedule` of a fine-tune (cosine from ``training.lr``), distillation settings included;
    ``overrides`` set a search round's own fields (lr, schedule, rewind point…)."""
    fields = dict(epochs=epochs, lr=training.lr, batch_size=training.batch_size, seed=seed,
                  train_fraction=training.train_fraction, distill_temperature=training.distill_temperature,
                  distill_alpha=training.distill_alpha, sync_bn=training.sync_bn,
                  distill_loss=training.distill_loss, classes=classes)
    fields.update(overrides)
    return TrainSchedule(**fields)
