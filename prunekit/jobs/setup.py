"""What both prune jobs do before they differ, in one place: resolve the device, build the model and check it
runs on its input size, load the data and check it fits the model, find the prunable channel groups (or refuse,
naming why each group is frozen) and draw the calibration batches the scores are computed on.

Raises PrunekitError on bad input and writes nothing.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from prunekit.compute.ddp import distributed
from prunekit.compute.device import Compute, resolve_compute
from prunekit.config import JobConfig
from prunekit.core.graph import ChannelGroup, find_groups, frozen_summary
from prunekit.core.trace import build_graph
from prunekit.outputs import named_outputs
from prunekit.data import DataBundle, load_data
from prunekit.data.inputs import check_data_fits, check_input_size
from prunekit.errors import PrunekitError
from prunekit.models import ModelSpec, resolve_model
from prunekit.progress import warn


@dataclass
class JobSetup:
    compute: Compute
    model: torch.nn.Module  # the dense model, in eval mode, on the CPU
    spec: ModelSpec
    bundle: DataBundle
    outputs: tuple[int, ...] | None  # the model's output shape at batch 1 (None: several outputs)

    def calibration_batches(self, cfg: JobConfig) -> list[torch.Tensor]:
        """``cfg.calib_images`` training images (seeded), as normalised batches: what every score reads."""
        calib = self.bundle.calibration(cfg.calib_images, seed=cfg.seed)
        return [x for x, _ in self.bundle.batches(calib, cfg.training.batch_size)]


def prepare_job(cfg: JobConfig, trust_code: bool = True) -> JobSetup:
    """Device, model, data and their fit checks, for either job (``trust_code``: the caller named the model spec;
    False when it was read back from a run folder the caller did not write)."""
    compute = resolve_compute(cfg.training.device, cfg.training.amp)
    check_sync_bn(cfg.training.sync_bn, compute)
    model, spec = resolve_model(cfg.model, weights=cfg.weights, input_size=cfg.input_size,
                                num_classes=cfg.num_classes, trust_pickle=cfg.trust_pickle, trust_code=trust_code)
    out = check_input_size(model, spec.input_size)
    named_outputs(out)  # a structure prunekit cannot follow (a non-tensor leaf) is refused here, by name
    outputs = tuple(out.shape) if isinstance(out, torch.Tensor) else None
    bundle = load_data(cfg.data, spec.input_size, mode=cfg.training.data_mode, workers=cfg.training.workers,
                       labels=cfg.training.labels)
    check_data_fits(bundle, spec.input_size, outputs, cfg.model)
    return JobSetup(compute, model, spec, bundle, outputs)


def check_sync_bn(sync_bn: bool, compute: Compute) -> None:
    """``--sync-bn`` is refused on the CPU (PyTorch's SyncBatchNorm runs only on GPUs) and does nothing without
    torchrun's ranks (one process already normalises over the whole batch): say so."""
    if not sync_bn:
        return
    if not compute.cuda:
        raise PrunekitError("--sync-bn needs --device cuda: PyTorch's SyncBatchNorm runs only on GPUs")
    if distributed()[1] == 1:
        warn("--sync-bn has no effect in one process: it shares BatchNorm statistics between torchrun's ranks")


def prunable_groups(model: torch.nn.Module, spec: ModelSpec, name: str) -> list[ChannelGroup]:
    """The model's coupled channel groups; an error naming the frozen groups' reasons when none is prunable."""
    groups = find_groups(model, build_graph(model, spec.input_size), spec.classifier,
                         input_size=spec.input_size)
    if not any(g.prunable for g in groups):
        reasons = "; ".join(frozen_summary(groups)[:3]) or "no conv layers"
        raise PrunekitError(f"nothing to prune in {name}: {reasons}")
    return groups
