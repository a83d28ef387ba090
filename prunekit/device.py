"""Where retraining runs: ``--device auto|cpu|cuda|cuda:N`` and ``--amp bf16|fp16|off|auto``.

The pruned model lives on the CPU between stages (graph tracing, surgery, verification and export are CPU
work, and masked == pruned is checked in fp32 there); :mod:`prunekit.train` and :mod:`prunekit.scoring` move
it to the :class:`Compute` device for the heavy loops and back. On CUDA, training uses autocast (bf16 by
default; fp16 with a gradient scaler) and channels_last; uint8 images travel to the GPU and are normalised
and augmented there. Under ``torchrun`` each rank takes the GPU of its ``LOCAL_RANK``.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from .errors import PrunekitError

AMP = ("auto", "bf16", "fp16", "off")


@dataclass(frozen=True)
class Compute:
    device: torch.device
    amp: str  # "bf16" | "fp16" | "off"

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def amp_dtype(self):
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.amp)

    @property
    def memory_format(self):
        return torch.channels_last if self.cuda else torch.contiguous_format

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp != "off")

    def to_dict(self) -> dict:
        d = {"device": str(self.device), "amp": self.amp}
        if self.cuda:
            d["gpu"] = torch.cuda.get_device_name(self.device)
        return d


CPU = Compute(torch.device("cpu"), "off")


def check_device_spec(spec: str) -> str:
    """Syntax only (no hardware query): ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    s = str(spec).strip().lower()
    if s in ("auto", "cpu", "cuda") or (s.startswith("cuda:") and s[5:].isdigit()):
        return s
    raise PrunekitError(f"--device must be auto, cpu, cuda or cuda:N, got {spec!r}")


def resolve_compute(device: str = "auto", amp: str = "auto") -> Compute:
    """The device and mixed precision to train on; a clear error when the hardware is not there."""
    spec = check_device_spec(device)
    if amp not in AMP:
        raise PrunekitError(f"--amp must be one of {', '.join(AMP)}, got {amp!r}")
    has_cuda = torch.cuda.is_available()
    if spec == "auto":
        spec = "cuda" if has_cuda else "cpu"
    if spec.startswith("cuda"):
        if not has_cuda:
            raise PrunekitError(f"--device {device}: no CUDA GPU is available to PyTorch on this machine "
                                "(use --device cpu)")
        index = int(spec[5:]) if ":" in spec else int(os.environ.get("LOCAL_RANK", "0"))
        if index >= torch.cuda.device_count():
            raise PrunekitError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA GPU(s) "
                                f"(cuda:0…cuda:{torch.cuda.device_count() - 1})")
        dev = torch.device("cuda", index)
        if amp == "auto":
            amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return Compute(dev, amp)
    if amp in ("fp16", "bf16"):
        raise PrunekitError(f"--amp {amp} needs a CUDA device: on the CPU prunekit trains in fp32 (--amp off)")
    return CPU


def comm_device() -> torch.device:
    """The device collectives run on: the rank's GPU under nccl, else the CPU (gloo)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


@contextlib.contextmanager
def on_device(model, compute: Compute):
    """Move ``model`` to the compute device (channels_last on CUDA) for the block, then back to the CPU."""
    if not compute.cuda:
        yield model
        return
    model.to(compute.device, memory_format=compute.memory_format)
    try:
        yield model
    finally:
        model.to("cpu", memory_format=torch.contiguous_format)
