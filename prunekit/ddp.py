"""Data-parallel helpers under ``torchrun``: rank and world size, and the collectives that keep every rank's
decisions identical (rank 0's measurements broadcast, a check that the replicas hold the same weights).
Collectives run on the rank's GPU under nccl and on the CPU under gloo (:func:`prunekit.device.comm_device`)."""
from __future__ import annotations

import torch
import torch.distributed as dist

from .device import comm_device
from .errors import PrunekitError


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
