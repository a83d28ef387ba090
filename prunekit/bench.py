"""Latency measurement of ONNX models in onnxruntime: fixed intra-op threads, sequential execution, full graph
optimisation, warm-up runs, then timed runs reported as percentiles.

The statistics are computed from a list of timings by :func:`summarize`, so they can be tested on a fake
timer; :func:`measure_onnx` is what the search (``latency=`` targets) and ``prunekit bench`` call.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np


@dataclass
class LatencyStats:
    batch: int
    runs: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float

    @property
    def throughput(self) -> float:
        """Images per second at the median latency."""
        return self.batch / (self.p50_ms / 1000) if self.p50_ms > 0 else float("inf")

    def to_dict(self) -> dict:
        return {**asdict(self), "throughput_ips": self.throughput}


def summarize(times_s: list[float], batch: int) -> LatencyStats:
    if not times_s:
        raise ValueError("no timings")
    ms = np.asarray(times_s, dtype=np.float64) * 1000
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return LatencyStats(batch, len(ms), float(p50), float(p90), float(p99), float(ms.mean()), float(ms.std()),
                        float(ms.min()), float(ms.max()))


def time_calls(fn: Callable[[], object], warmup: int, runs: int,
               clock: Callable[[], float] = time.perf_counter) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        t0 = clock()
        fn()
        out.append(clock() - t0)
    return out


def ort_benchmark_session(path: str, threads: int = 1, provider: str = "cpu"):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if provider == "cuda" else ["CPUExecutionProvider"]
    return ort.InferenceSession(path, so, providers=providers)


def measure_onnx(path: str, input_size: tuple[int, int, int], batch: int = 1, threads: int = 1, warmup: int = 10,
                 runs: int = 100, provider: str = "cpu") -> LatencyStats:
    sess = ort_benchmark_session(path, threads, provider)
    name = sess.get_inputs()[0].name
    x = np.random.default_rng(0).standard_normal((batch, *input_size)).astype(np.float32)
    return summarize(time_calls(lambda: sess.run(None, {name: x}), warmup, runs), batch)
