"""What this machine is, read once: the CPU's model name, its feature flags and core count (Linux
``/proc/cpuinfo``; elsewhere what :mod:`platform` says). Every place that needs a CPU fact asks here: the
channel grids, the native-bf16 check of training, the fingerprints of latency tables and run records."""
from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass


@dataclass(frozen=True)
class CpuInfo:
    model: str
    machine: str
    cores: int
    flags: frozenset[str]

    @property
    def native_bf16(self) -> bool:
        """bf16 arithmetic in hardware: AMX tiles (``amx_bf16``) or AVX-512 BF16 dot products (``avx512_bf16``).
        oneDNN also *emulates* bf16 on plain AVX-512, which is slower than fp32, so that does not count."""
        return bool({"amx_bf16", "avx512_bf16"} & self.flags)

    @property
    def isa(self) -> str:
        """The widest vector / matrix extension, in words (for tables and run records)."""
        for flag, words in (("amx_int8", "AMX"), ("avx512_bf16", "AVX-512 BF16"), ("avx512f", "AVX-512"),
                            ("avx2", "AVX2")):
            if flag in self.flags:
                return words
        return self.machine or "unknown"

    def to_dict(self) -> dict:
        return {"cpu": self.model, "machine": self.machine, "cores": self.cores, "isa": self.isa,
                "native_bf16": self.native_bf16}


def _read_cpuinfo(path: str = "/proc/cpuinfo") -> tuple[str | None, set[str]]:
    model, flags = None, set()
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model is None:
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
                if model is not None and flags:
                    break
    except OSError:
        pass
    return model, flags


@functools.lru_cache(maxsize=1)
def cpu_info() -> CpuInfo:
    """This machine's CPU (read once per process)."""
    model, flags = _read_cpuinfo()
    return CpuInfo(model or platform.processor() or platform.machine() or "unknown CPU",
                   platform.machine().lower(), os.cpu_count() or 1, frozenset(flags))


def nchwc_block(info: CpuInfo | None = None) -> tuple[int, str]:
    """(onnxruntime's MLAS NCHWc block size, how it was detected) for this machine's CPU."""
    info = info or cpu_info()
    if "avx512f" in info.flags:
        return 16, "AVX-512 CPU (avx512f): onnxruntime's MLAS NCHWc block is 16 channels"
    if "avx2" in info.flags or "avx" in info.flags:
        return 8, "AVX2 CPU: onnxruntime's MLAS NCHWc block is 8 channels"
    if info.machine in ("x86_64", "amd64", "i686", "x86"):
        return 8, "x86 CPU without AVX (or flags unknown): assuming MLAS's 8-channel NCHWc block"
    return 8, f"{info.machine or 'unknown'} CPU: no MLAS NCHWc kernels known here; 8 channels suit its SIMD width"
