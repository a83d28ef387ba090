"""BatchNorm re-estimation after surgery ("adaptive BN", EagleEye): a pruned network's BatchNorm layers still
hold the dense network's running statistics, which no longer describe the activations once channels upstream
are gone. Resetting them and re-estimating them on a few thousand training images, with no gradient step,
recovers much of the accuracy lost, makes a pruned candidate's accuracy a usable reading before any training,
and gives retraining a better start.

The forward runs with only the BatchNorm layers in train mode (dropout and the rest stay in eval), momentum
``None`` (a cumulative average over all batches, independent of their order), no gradients; afterwards every
module's mode and momentum are restored. Weights, biases and every other buffer are untouched.
"""
from __future__ import annotations

import contextlib
import time

import torch
import torch.nn as nn

from prunekit.compute.device import CPU, Compute, on_device

BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def reestimate_bn(model: nn.Module, bundle, images: int, batch_size: int = 256, seed: int = 0,
                  compute: Compute = CPU) -> dict | None:
    """Reset and re-estimate the running mean / variance of every tracking BatchNorm of ``model`` on ``images``
    training images (a fixed spread, un-augmented). Returns {"images", "layers", "seconds"}, or None when
    ``images`` is 0, the model has no such BatchNorm, or the data has no training images."""
    bns = [m for m in model.modules() if isinstance(m, BN_TYPES) and m.track_running_stats]
    if images <= 0 or not bns or bundle is None or bundle.train is None or len(bundle.train) == 0:
        return None
    t0 = time.perf_counter()
    calib = bundle.calibration(images, seed=seed)
    modes = {m: m.training for m in model.modules()}
    momenta = {m: m.momentum for m in bns}
    try:
        model.eval()
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average
            m.train()
        # fp32 on the CPU (the statistics of the model that is delivered); CUDA keeps its autocast
        with on_device(model, compute), torch.no_grad(), (compute.autocast() if compute.cuda else
                                                           contextlib.nullcontext()):
            for x, _ in bundle.batches(calib, batch_size, device=compute.device, memory_format=compute.memory_format):
                model(x)
    finally:
        for m, momentum in momenta.items():
            m.momentum = momentum
        for m, mode in modes.items():
            m.train(mode)
    return {"images": len(calib), "layers": len(bns), "seconds": time.perf_counter() - t0}
