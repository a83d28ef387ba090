"""Evaluation and (fine-)training of classifiers on a :class:`~prunekit.data.DataBundle`.

Fine-tuning: Nesterov SGD (momentum 0.9), weight decay, cosine learning-rate decay over the run, random crop +
horizontal flip. The model trained is the physically pruned one, so pruned filters cannot come back.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .data import ArrayDataset, DataBundle


@dataclass
class TrainConfig:
    epochs: float = 1.0
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    seed: int = 0


def evaluate(model: nn.Module, bundle: DataBundle, ds: ArrayDataset | None, batch_size: int = 500) -> float | None:
    """Top-1 accuracy in percent, or None when the split has no labels."""
    if ds is None or ds.labels is None or bundle.synthetic or len(ds) == 0:
        return None
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in bundle.batches(ds, batch_size):
            correct += int((model(x).argmax(1) == y).sum())
    return 100.0 * correct / len(ds)


def finetune(model: nn.Module, bundle: DataBundle, cfg: TrainConfig,
             progress: Callable[[str], None] | None = None) -> dict:
    """Train ``model`` in place on the training split; returns a summary (steps, seconds, last loss)."""
    if not bundle.has_labels:
        raise ValueError("fine-tuning needs labelled data")
    torch.manual_seed(cfg.seed)
    steps_per_epoch = math.ceil(len(bundle.train) / cfg.batch_size)
    total = max(1, int(round(cfg.epochs * steps_per_epoch)))
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=True,
                          weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    model.train()
    step, loss_value, t0, epoch = 0, float("nan"), time.perf_counter(), 0
    while step < total:
        for x, y in bundle.batches(bundle.train, cfg.batch_size, shuffle=True, augment=True, seed=cfg.seed + epoch):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            loss_value = float(loss.detach())
            if progress and step % 50 == 0:
                progress(f"fine-tune step {step}/{total} loss {loss_value:.3f}")
            if step >= total:
                break
        epoch += 1
    model.eval()
    return {"steps": step, "epochs": cfg.epochs, "seconds": time.perf_counter() - t0, "last_loss": loss_value}
