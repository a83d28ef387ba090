"""Evaluation and (re)training of classifiers on a :class:`~prunekit.data.DataBundle`.

Training: Nesterov SGD (momentum 0.9), weight decay, random crop + horizontal flip. The learning rate
follows a *base schedule* over a notional full training run u ∈ [0, 1]:

- ``step``: ``lr`` × 0.1 at u = 0.5 and u = 0.75 (the paper's CIFAR ResNet schedule: epochs 91 and 136 of 182);
- ``cosine``: ``lr`` · (1 + cos(π u)) / 2.

A retraining round with learning-rate rewinding to ``rewind_point`` k plays the tail u ∈ [k, 1] of that
schedule, compressed into the round's epochs (METHOD.md §2: k ≈ 0.6). Fine-tuning after one-shot pruning is
the same with k = 0 and a cosine schedule. The model trained is the physically pruned one, so pruned
filters stay removed and receive no update.

**A budget in minutes** (``minutes``): progress through the schedule is the larger of the steps done over the
epochs' steps and the time spent over the budget, and training stops when either is complete. An epoch costs
what the machine and the precision make it cost (bf16 on a CPU with native bf16 is 2–3× faster), so methods are
compared at equal wall-clock this way.

Under ``torchrun`` (``torch.distributed`` initialised), each rank reads only its share of every global batch
and the model is wrapped in DistributedDataParallel (gloo on CPU, nccl on GPU); BatchNorm buffers are
broadcast from rank 0, so every rank ends with the same weights. BatchNorm normalises each rank's share of
the batch unless ``sync_bn`` (``--sync-bn``) makes it a SyncBatchNorm over the global batch for the loop.
``compute`` (:mod:`prunekit.compute.device`) says where: the model goes to that device for the loop
(channels_last and autocast on CUDA) and comes back.
"""
from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from prunekit.data import ArrayDataset, DataBundle
from prunekit.compute.ddp import distributed, synced_batchnorm
from prunekit.compute.device import CPU, Compute, on_device
from prunekit.compute.distill import loss_kinds, output_losses
from prunekit.progress import progress_bar


@dataclass
class TrainSchedule:
    """One training call: epochs, optimiser, LR schedule and where it starts (rewinding). The jobs build one per
    round or fine-tune from their :class:`prunekit.config.TrainingConfig` (the user's setting)."""
    epochs: float = 1.0
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    seed: int = 0
    schedule: str = "cosine"  # "cosine" | "step"
    rewind_point: float = 0.0  # start of the schedule tail that is played (0 = whole schedule)
    train_fraction: float = 1.0  # share of the training split used
    distill_temperature: float = 4.0  # with a teacher (train(..., teacher=)): the soft targets' temperature
    distill_alpha: float = 0.9  # with a teacher: weight of the soft (distillation) term
    sync_bn: bool = False  # under torchrun: BatchNorm statistics over the global batch (SyncBatchNorm, CUDA only)
    minutes: float = 0.0  # > 0: a wall-clock budget; the schedule spans it (epochs, when > 0, cap the steps)
    distill_loss: str = "auto"  # per output (see prunekit.compute.distill): auto | kl | mse | smooth-l1 | name=…
    classes: int | None = None  # the model's class count: a map with as many channels is a class map (auto: kl)


def base_lr(cfg: TrainSchedule, u: float) -> float:
    u = min(max(u, 0.0), 1.0)
    if cfg.schedule == "step":
        return cfg.lr * (0.1 ** sum(u >= m for m in (0.5, 0.75)))
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * u))
    raise ValueError(f"unknown schedule {cfg.schedule!r}")


def lr_at(cfg: TrainSchedule, t: float) -> float:
    """Learning rate at progress t ∈ [0, 1] of this (re)training: the base schedule's tail from the rewind point."""
    return base_lr(cfg, cfg.rewind_point + (1 - cfg.rewind_point) * t)


def evaluate(model: nn.Module, bundle: DataBundle, ds: ArrayDataset | None, batch_size: int = 500,
             compute: Compute = CPU) -> float | None:
    """Top-1 accuracy in percent, or None when the split has no labels. Runs on ``compute`` in fp32 (no
    autocast: the figure is the accuracy of the model that is delivered, an fp32 model) and leaves the model
    where it was."""
    if ds is None or ds.labels is None or bundle.synthetic or len(ds) == 0:
        return None
    model.eval()
    correct = 0
    with on_device(model, compute), torch.no_grad():
        for x, y in bundle.batches(ds, batch_size, device=compute.device, memory_format=compute.memory_format):
            out = model(x)
            if not isinstance(out, torch.Tensor) or out.dim() != 2:  # not class scores: no accuracy to read
                return None
            correct += int((out.argmax(1) == y).sum())
    return 100.0 * correct / len(ds)


def train(model: nn.Module, bundle: DataBundle, cfg: TrainSchedule, compute: Compute = CPU,
          teacher: nn.Module | None = None) -> dict:
    """Train ``model`` in place on ``compute``; returns a summary (steps, seconds, last loss, images seen).

    With a ``teacher`` (:func:`prunekit.compute.distill.frozen_teacher` of the dense model) the loss is
    :func:`~prunekit.compute.distill.output_losses` against the teacher's outputs for the same augmented batch
    (every output of any structure; labels only add their cross-entropy term, so unlabelled data trains too); the
    teacher stays frozen and goes to the same device for the loop. ``teacher_s`` in the summary is the time
    spent in its forwards, ``distill.losses`` each output's loss over the last steps. Under torchrun each rank
    reads only its share of every global batch (same permutation on every rank) and holds its own teacher."""
    if not bundle.has_labels and teacher is None:
        raise ValueError("training without labels needs a teacher (distillation from the dense model)")
    rank, world = distributed()
    torch.manual_seed(cfg.seed)
    ds = bundle.train
    if cfg.train_fraction < 1.0:
        n = max(cfg.batch_size, int(round(len(ds) * cfg.train_fraction)))
        ds = ds.subset(np.sort(np.random.default_rng(cfg.seed).choice(len(ds), size=min(n, len(ds)), replace=False)))
    steps_per_epoch = math.ceil(len(ds) / cfg.batch_size)
    progress = _Progress(cfg, steps_per_epoch, world, compute.device)
    step, loss_value, t0, epoch, seen = 0, float("nan"), time.perf_counter(), 0, 0
    bar = progress_bar(progress.total or steps_per_epoch, "train")
    teacher_s, losses = 0.0, _OutputLosses(cfg)
    sync = cfg.sync_bn and world > 1
    with on_device(model, compute), (on_device(teacher, compute) if teacher is not None else nullcontext()), \
            (synced_batchnorm(model) if sync else nullcontext()):
        net = model
        if world > 1:  # gradients all-reduced; buffers broadcast from rank 0 at each forward
            net = nn.parallel.DistributedDataParallel(model, device_ids=[compute.device.index] if compute.cuda
                                                      else None)
        opt = torch.optim.SGD(model.parameters(), lr=lr_at(cfg, 0.0), momentum=cfg.momentum, nesterov=True,
                              weight_decay=cfg.weight_decay)
        scaler = torch.amp.GradScaler("cuda", enabled=compute.amp == "fp16")
        net.train()
        u = 0.0
        while u < 1:
            for x, y in bundle.batches(ds, cfg.batch_size, shuffle=True, augment=True, seed=cfg.seed * 7919 + epoch,
                                       device=compute.device, shard=(rank, world),
                                       memory_format=compute.memory_format):
                for group in opt.param_groups:
                    group["lr"] = lr_at(cfg, u)
                if teacher is not None:
                    t_teacher = time.perf_counter()
                    with torch.no_grad(), compute.autocast():
                        soft = teacher(x)
                    teacher_s += time.perf_counter() - t_teacher
                with compute.autocast():
                    out = net(x)
                    loss = F.cross_entropy(out, y) if teacher is None else losses(out, soft, y)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                step += 1
                seen += int(x.shape[0]) * world
                loss_value = float(loss.detach())
                u = progress(step)
                if progress.budget and (step in (10, 50) or step % 100 == 0):  # the steps the budget will hold
                    bar.retotal(min(progress.total or 10 ** 9, round(step / max(u, 1e-9))))
                bar(step, loss=loss_value)
                if u >= 1:
                    break
            epoch += 1
        if world > 1:  # the last forward updated BatchNorm statistics on each rank's own shard: take rank 0's
            with torch.no_grad():
                for buf in model.buffers():
                    dist.broadcast(buf, 0)
    bar.close()
    model.eval()
    return {"steps": step, "epochs": cfg.epochs, "epochs_done": seen / max(len(ds), 1), "images": seen,
            "seconds": time.perf_counter() - t0, "minutes": cfg.minutes or None,
            "last_loss": loss_value, "device": str(compute.device), "amp": compute.amp, "sync_bn": sync,
            "distill": None if teacher is None else {"temperature": cfg.distill_temperature, "alpha": (
                cfg.distill_alpha if bundle.has_labels else 1.0), "teacher_s": teacher_s, **losses.summary()}}


class _Progress:
    """Where in the schedule the next step is, in [0, 1]: steps done over the epochs' steps, or time spent over
    the minutes budget, whichever is further; under torchrun the furthest rank's clock decides, so every rank
    stops at the same step."""

    def __init__(self, cfg: TrainSchedule, steps_per_epoch: int, world: int, device):
        self.budget = cfg.minutes * 60 if cfg.minutes > 0 else None
        self.total = (max(1, int(round(cfg.epochs * steps_per_epoch))) if cfg.epochs > 0 or self.budget is None
                      else None)
        self.world, self.device, self.t0 = world, device, time.perf_counter()

    def __call__(self, step: int) -> float:
        done = step / self.total if self.total else 0.0
        if not self.budget:
            return done
        u = max(done, (time.perf_counter() - self.t0) / self.budget)
        if self.world > 1:
            t = torch.tensor([u], dtype=torch.float64, device=self.device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            u = float(t)
        return u


class _OutputLosses:
    """The distillation loss of every step (kinds chosen on the first batch's teacher outputs), and each output's
    loss averaged over the last 50 steps, for the summary."""

    def __init__(self, cfg: TrainSchedule):
        from prunekit.config.choices import parse_distill_loss

        self.cfg, self.chosen, self.kinds = cfg, parse_distill_loss(cfg.distill_loss), None
        self.recent: list[dict[str, float]] = []

    def __call__(self, out, soft, labels):
        if self.kinds is None:
            self.kinds = loss_kinds(soft, self.cfg.classes, self.chosen)
        loss, each = output_losses(out, soft, labels, self.kinds, self.cfg.distill_temperature,
                                   self.cfg.distill_alpha)
        self.recent = (self.recent + [each])[-50:]
        return loss

    def summary(self) -> dict:
        if not self.recent:
            return {}
        return {"kinds": self.kinds, "losses": {k: float(np.mean([r[k] for r in self.recent]))
                                                 for k in self.recent[-1]}}


def finetune(model: nn.Module, bundle: DataBundle, cfg: TrainSchedule, compute: Compute = CPU,
             teacher: nn.Module | None = None) -> dict:
    """Fine-tune after one-shot pruning: the whole (cosine) schedule, over ``cfg.epochs``."""
    return train(model, bundle, cfg, compute, teacher)
