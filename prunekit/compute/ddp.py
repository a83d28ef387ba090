"""Data-parallel helpers under ``torchrun``: rank and world size, and the collectives that keep every rank's
decisions identical (rank 0's measurements broadcast, a check that the replicas hold the same weights).
Collectives run on the rank's GPU under nccl and on the CPU under gloo (:func:`prunekit.compute.device.comm_device`)."""
from __future__ import annotations

import os
from contextlib import contextmanager

import torch
import torch.distributed as dist
import torch.nn as nn

from prunekit.compute.device import comm_device
from prunekit.config.choices import check_device_spec
from prunekit.errors import PrunekitError


def distributed() -> tuple[int, int]:
    """(rank, world size); (0, 1) when not launched by torchrun."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def broadcast_value(value: float) -> float:
    """Rank 0's value on every rank (timings differ between processes; decisions must not)."""
    if distributed()[1] == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=comm_device())  # nccl needs device tensors
    dist.broadcast(t, 0)
    return float(t.item())


def broadcast_object(obj):
    """Rank 0's (picklable) object on every rank: one decision, taken once."""
    if distributed()[1] == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, 0, device=comm_device())
    return box[0]


@contextmanager
def synced_batchnorm(model: nn.Module):
    """``--sync-bn``: inside, every BatchNorm of ``model`` is a :class:`torch.nn.SyncBatchNorm` that shares its
    weight, bias and running statistics (the same tensors), so statistics are computed over the global batch of
    all ranks rather than each rank's share; on exit the original modules are back, holding what training
    changed. The delivered model never contains SyncBatchNorm (surgery, export and reload see plain BatchNorm).
    Outside a process group SyncBatchNorm computes what BatchNorm does; PyTorch runs it only on GPUs."""
    swapped = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, nn.SyncBatchNorm):
                sync = nn.SyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                        child.track_running_stats)
                if child.affine:
                    sync.weight, sync.bias = child.weight, child.bias
                if child.track_running_stats:
                    sync.running_mean, sync.running_var = child.running_mean, child.running_var
                    sync.num_batches_tracked = child.num_batches_tracked
                sync.train(child.training)
                setattr(parent, name, sync)
                swapped.append((parent, name, child, sync))
    try:
        yield model
    finally:
        for parent, name, child, sync in swapped:
            child.train(sync.training)
            setattr(parent, name, child)


def barrier() -> None:
    if distributed()[1] > 1:
        dist.barrier()


def check_replicas_agree(model) -> None:
    """Every rank must hold the same weights after training (else decisions could diverge)."""
    world = distributed()[1]
    if world == 1:
        return
    total = torch.tensor([sum(float(t.double().sum()) for t in model.state_dict().values())], dtype=torch.float64,
                         device=comm_device())
    gathered = [torch.zeros_like(total) for _ in range(world)]
    dist.all_gather(gathered, total)
    if max(float(g) for g in gathered) != min(float(g) for g in gathered):
        raise PrunekitError(f"data-parallel replicas diverged: weight sums {[float(g) for g in gathered]}")


def init_from_env(device: str = "auto") -> str | None:
    """Join the process group when launched by torchrun; returns the backend (None outside torchrun).

    The backend follows ``--device``, not the hardware: nccl when the job trains on CUDA (each rank on the GPU
    of its ``LOCAL_RANK``), gloo on the CPU, so ``--device cpu`` on a GPU machine stays on the CPU."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    if dist.is_initialized():
        return dist.get_backend()
    spec = check_device_spec(device)
    on_cuda = spec.startswith("cuda") or (spec == "auto" and torch.cuda.is_available())
    if on_cuda:
        local, count = int(os.environ.get("LOCAL_RANK", "0")), torch.cuda.device_count()
        if local >= count:
            raise PrunekitError(f"torchrun started a rank with LOCAL_RANK {local} but this machine has {count} CUDA "
                                f"GPU(s): use --nproc_per_node {count} or less, or --device cpu")
        torch.cuda.set_device(local)
        dist.init_process_group("nccl")
        return "nccl"
    dist.init_process_group("gloo")
    return "gloo"
