"""What every search round (and the delivery) does to a pruned model besides planning it: BatchNorm
re-estimation, retraining (distilled from the dense model when the run distils) and the reading the controller
decides on. ``trainer`` / ``evaluator`` are injected (:func:`prunekit.compute.train.train` /
:func:`~prunekit.compute.train.evaluate` by default, or the fidelity score of a ``fidelity=`` target)."""
from __future__ import annotations

from prunekit.compute.ddp import broadcast_value
from prunekit.compute.recovery import recalibrate, teacher_for, training_schedule
from prunekit.compute.train import TrainSchedule, evaluate, train


class RoundRecovery:
    def __init__(self, ctx, trainer=train, evaluator=evaluate):
        self.ctx, self.trainer, self.evaluator = ctx, trainer, evaluator
        self.teacher = teacher_for(ctx.dense, ctx.bundle, ctx.cfg.training)  # frozen dense copy, or None

    def schedule(self, r: int) -> TrainSchedule:
        """Round ``r``'s training schedule (its own seed; the rewind point and LR schedule of the run)."""
        cfg = self.ctx.cfg
        return training_schedule(cfg.training, cfg.epochs_per_round, cfg.seed * 100003 + r, lr=cfg.train_lr,
                                 weight_decay=cfg.weight_decay, schedule=cfg.lr_schedule,
                                 rewind_point=cfg.rewind_point)

    def retrain(self, model, schedule: TrainSchedule) -> dict:
        """``trainer`` on ``model``, distilled from the dense model when the run distils."""
        extra = {"teacher": self.teacher} if self.teacher is not None else {}
        return self.trainer(model, self.ctx.bundle, schedule, self.ctx.compute, **extra)

    def recalibrate(self, model, seed: int) -> float:
        """BatchNorm re-estimation (``--bn-images``); its seconds (0 when off)."""
        done = recalibrate(model, self.ctx.bundle, self.ctx.cfg.training, seed, self.ctx.compute)
        return done["seconds"] if done else 0.0

    def read(self, model) -> float | None:
        """The measure rounds are judged on (accuracy or fidelity, %) on the validation images, the same on every
        rank."""
        return broadcast_value(self.read_on(model, self.ctx.val))

    def read_on(self, model, ds) -> float | None:
        """The same measure on ``ds`` (None when there is no such split)."""
        return self.evaluator(model, self.ctx.bundle, ds, compute=self.ctx.compute)
