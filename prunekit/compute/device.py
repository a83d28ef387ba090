"""Where retraining runs: ``--device auto|cpu|cuda|cuda:N`` and ``--amp bf16|fp16|off|auto``.

The pruned model lives on the CPU between stages (graph tracing, surgery, verification and export are CPU work, and
masked == pruned is checked in fp32 there); :mod:`prunekit.compute.train` and :mod:`prunekit.core.scoring` move it
to the :class:`Compute` device (and memory format) for the heavy loops and back. On CUDA, training uses autocast
(bf16 by default; fp16 with a gradient scaler) and channels_last; uint8 images travel to the GPU and are
normalised and augmented there. Under ``torchrun`` each rank takes the GPU of its ``LOCAL_RANK``.

**On the CPU**, ``--amp auto`` trains in bf16 autocast with channels_last where the CPU computes bf16 in hardware
(AMX or AVX-512 BF16: the ``amx_bf16`` / ``avx512_bf16`` flags of ``/proc/cpuinfo``, read by
:func:`prunekit.runtimes.cpu_info`), and in fp32 elsewhere: oneDNN would emulate bf16 on other CPUs, slower than
fp32. ``--amp bf16`` is refused there with that reason. Weights stay fp32 (autocast computes in bf16, the
optimiser updates fp32 parameters); scores, BatchNorm re-estimation, verification and every reported accuracy
run in fp32.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from prunekit.config.choices import CHOICES, check_choice, check_device_spec
from prunekit.errors import PrunekitError
from prunekit.runtimes import cpu_info

AMP = CHOICES["amp"]


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
        return torch.channels_last if self.cuda or self.amp == "bf16" else torch.contiguous_format

    @property
    def amp_words(self) -> str:
        """``bf16 autocast, channels_last on cpu`` / ``fp32 on cpu``: how training runs, for messages."""
        where = str(self.device)
        if self.amp == "off":
            return f"fp32 on {where}"
        layout = ", channels_last" if self.memory_format == torch.channels_last else ""
        return f"{self.amp} autocast{layout} on {where}"

    def placed(self, model):
        """The block runs ``model`` on this device and memory format (:func:`on_device`); what the core's loops
        (scores) receive, so the core needs no import of this layer."""
        return on_device(model, self)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp != "off")

    def to_dict(self) -> dict:
        d = {"device": str(self.device), "amp": self.amp,
             "memory_format": "channels_last" if self.memory_format == torch.channels_last else "contiguous"}
        if self.cuda:
            d["gpu"] = torch.cuda.get_device_name(self.device)
        else:
            cpu = cpu_info()
            d.update(cpu=cpu.model, native_bf16=cpu.native_bf16)
        return d


CPU = Compute(torch.device("cpu"), "off")


def resolve_compute(device: str = "auto", amp: str = "auto") -> Compute:
    """The device and mixed precision to train on; a clear error when the hardware is not there."""
    spec = check_device_spec(device)
    check_choice("amp", amp)
    has_cuda = torch.cuda.is_available()
    if spec == "auto":
        spec = "cuda" if has_cuda else "cpu"
    if spec.startswith("cuda"):
        if not has_cuda:
            raise PrunekitError(f"--device {device}: no CUDA GPU is available to PyTorch on this machine "
                                "(use --device cpu)")
        index = cuda_index(spec)
        if index >= torch.cuda.device_count():
            raise PrunekitError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA GPU(s) "
                                f"(cuda:0…cuda:{torch.cuda.device_count() - 1})")
        torch.cuda.set_device(index)  # the current device: .cuda(), timings and capability checks use it
        if amp == "auto":  # native bf16 (Ampere and later); emulated bf16 is slow, fp16 + GradScaler is right there
            amp = "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
        # "fp32" (--amp off, scores, verification) means fp32: no TF32 matmuls / convolutions
        torch.backends.cuda.matmul.allow_tf32 = amp != "off" and torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = amp != "off"
        return Compute(torch.device("cuda", index), amp)
    return cpu_compute(amp)


def cpu_compute(amp: str = "auto") -> Compute:
    """Training on the CPU: bf16 autocast + channels_last where the CPU has native bf16 (``auto`` or ``bf16``),
    fp32 otherwise (``auto`` or ``off``)."""
    cpu = cpu_info()
    if amp == "fp16":
        raise PrunekitError("--amp fp16 needs a CUDA device: on the CPU prunekit trains in bf16 (where the CPU has "
                            "it) or fp32 (--amp off)")
    if amp == "bf16" and not cpu.native_bf16:
        raise PrunekitError(f"--amp bf16: this CPU ({cpu.model}) has no native bf16 units (no amx_bf16 or "
                            "avx512_bf16 flag in /proc/cpuinfo), so bf16 would be emulated, slower than fp32; use "
                            "--amp off (or auto)")
    if amp == "bf16" or (amp == "auto" and cpu.native_bf16):
        return Compute(torch.device("cpu"), "bf16")
    return CPU


def cuda_index(spec: str) -> int:
    """The GPU a ``cuda`` / ``cuda:N`` spec means: under torchrun, the rank's own (``LOCAL_RANK``; an explicit
    ``cuda:N`` that names another GPU is refused, since every rank would train on the same one)."""
    local = os.environ.get("LOCAL_RANK") if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None
    if ":" not in spec:
        return int(local or 0)
    index = int(spec[5:])
    if local is not None and index != int(local):
        raise PrunekitError(f"--device {spec} under torchrun: each rank trains on the GPU of its LOCAL_RANK "
                            f"(this rank's is cuda:{local}); use --device cuda")
    return index


def comm_device() -> torch.device:
    """The device collectives run on: the rank's GPU under nccl, else the CPU (gloo)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


@contextlib.contextmanager
def on_device(model, compute: Compute):
    """Move ``model`` to the compute device and memory format (channels_last on CUDA and for CPU bf16) for the
    block, then back to the CPU, contiguous."""
    if not compute.cuda and compute.memory_format == torch.contiguous_format:
        yield model
        return
    model.to(compute.device, memory_format=compute.memory_format)
    try:
        yield model
    finally:
        model.to("cpu", memory_format=torch.contiguous_format)
