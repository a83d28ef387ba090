"""Deployment runtimes and the channel counts their fast kernels need.

A pruned model is only worth shipping if it runs faster where it ships, and that depends on channel counts:

- ``onnxruntime-cpu``: onnxruntime's CPU Conv runs the MLAS NCHWc kernels only when channel counts are multiples
  of 4, and pads them to the NCHWc block, 16 floats with AVX-512 and 8 with AVX2 (``NchwcBlockSize`` in MLAS
  ``platform.cpp``). Counts like 31 fall back to im2col + GEMM with reorders around them; counts like 20 run
  NCHWc but pay for 32. Aligning to the block gets the full benefit of each removed channel.
- ``onnxruntime-cpu-int8``: a model to be quantized (``prunekit quantize``). Measured on an AVX-512 CPU
  (``benchmarks/int8_channels.py``), onnxruntime's int8 convs show no channel staircase of their own (time
  per MAC falls smoothly as layers widen), so the stricter rule is the fp32 NCHWc block, which it uses.
- ``cuda``: fp16 / bf16 tensor cores want multiples of 8.

:func:`resolve_round_to` turns ``--round-to N|auto`` and ``--runtime`` into the multiple every pruned group
keeps, and says what it detected (written to ``run.json``).
"""
from __future__ import annotations

import platform
from dataclasses import asdict, dataclass

import numpy as np

from prunekit.config.choices import CHOICES, check_choice, parse_round_to

RUNTIMES = CHOICES["runtime"]


@dataclass(frozen=True)
class Alignment:
    round_to: int  # every pruned group keeps a multiple of this many channels (or its full width)
    runtime: str
    detected: str  # how ``round_to`` was chosen, in words

    def to_dict(self) -> dict:
        return asdict(self)

    def relaxed(self, round_to: int, target: str) -> Alignment:
        """The alignment actually used when ``target`` was out of reach at ``self.round_to``."""
        return Alignment(round_to, self.runtime, f"{self.detected}; relaxed to {round_to}: {target} is out of "
                                                 f"reach with multiples of {self.round_to}")


def cpu_flags() -> set[str]:
    """The CPU feature flags Linux reports (empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def nchwc_block() -> tuple[int, str]:
    """(MLAS NCHWc block size, how it was detected) for this machine's CPU."""
    flags = cpu_flags()
    machine = platform.machine().lower()
    if "avx512f" in flags:
        return 16, "AVX-512 CPU (avx512f): onnxruntime's MLAS NCHWc block is 16 channels"
    if "avx2" in flags or "avx" in flags:
        return 8, "AVX2 CPU: onnxruntime's MLAS NCHWc block is 8 channels"
    if machine in ("x86_64", "amd64", "i686", "x86"):
        return 8, "x86 CPU without AVX (or flags unknown): assuming MLAS's 8-channel NCHWc block"
    return 8, f"{machine or 'unknown'} CPU: no MLAS NCHWc kernels known here; 8 channels suit its SIMD width"


def check_runtime(runtime: str) -> str:
    return check_choice("runtime", runtime)


def resolve_round_to(round_to, runtime: str = "onnxruntime-cpu", block: tuple[int, str] | None = None) -> Alignment:
    """The channel multiple for ``--round-to`` (``auto`` picks the runtime's) and ``--runtime``; ``block``: the
    target device's NCHWc block (from its latency table) instead of this machine's."""
    runtime = check_runtime(runtime)
    value = parse_round_to(round_to)
    if value != "auto":
        return Alignment(value, runtime, "set by --round-to" if value > 1 else "no alignment (--round-to 1)")
    if runtime == "cuda":
        return Alignment(8, runtime, "CUDA: fp16/bf16 tensor cores want multiples of 8 channels")
    block, how = (block[0], f"the latency table's device: {block[1]}") if block and block[0] else nchwc_block()
    if runtime == "onnxruntime-cpu-int8":
        how += ("; int8 convs measured without a channel block of their own (benchmarks/int8_channels.py), so "
                "the fp32 block is the stricter")
    return Alignment(block, runtime, how)


def candidate_widths(channels: int, round_to: int, min_keep: int = 1, max_options: int = 64) -> list[int]:
    """Kept widths a group of ``channels`` may take, ascending, ending with ``channels`` (the group untouched)."""
    step = max(1, round_to)
    widths = [w for w in range(step, channels, step) if w >= min_keep]
    if len(widths) > max_options - 1:  # evenly spread, on the grid
        pick = np.unique(np.round(np.linspace(0, len(widths) - 1, max_options - 1)).astype(int))
        widths = [widths[i] for i in pick]
    return widths + [channels]
