"""Where a pruned model runs: one registered :class:`Runtime` per runtime × precision (:mod:`.base`), with the
timing (:mod:`.timing`), the one-layer models of latency tables (:mod:`.layers`) and the CPU facts
(:mod:`.machine`) they share. Heavy libraries (onnxruntime, OpenVINO, torch) are imported only when a runtime
is used, so the CLI can list the choices without them.

Registered here, in this order (the order of ``--runtime``'s choices): onnxruntime CPU fp32 and int8, OpenVINO CPU
(default precision, f32, int8), PyTorch eager CPU and CUDA.
"""
from __future__ import annotations

from prunekit.runtimes import onnxruntime_cpu, openvino_cpu, torch_eager  # noqa: F401 (registrations)
from prunekit.runtimes.base import (RUNTIMES, Grid, Measured, Runner, Runtime, available_runtimes, get_runtime,
                                    register, runtime_names)
from prunekit.runtimes.machine import CpuInfo, cpu_info, nchwc_block
from prunekit.runtimes.timing import LatencyStats, Speedup, paired_speedup, summarize, time_calls

__all__ = ["RUNTIMES", "CpuInfo", "Grid", "LatencyStats", "Measured", "Runner", "Runtime", "Speedup",
           "available_runtimes", "cpu_info", "get_runtime", "nchwc_block", "paired_speedup", "register",
           "runtime_names", "summarize", "time_calls"]
