"""Timing shared by every runtime: warm-up, then timed calls, models interleaved (A B A B …) so that drift and
other work on the machine hit all of them alike, summarised as percentiles; and the speedup of one model over
another as the ratio of their fast tails with its spread, which is what planning decides on.

Pure functions of a list of timings, so they are tested on a fake clock."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

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


def interleaved(calls: dict[str, Callable[[], object]], warmup: int, runs: int,
                clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """Seconds per call of every callable, ``runs`` rounds of one call each in turn, after ``warmup`` rounds."""
    for _ in range(warmup):
        for fn in calls.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(runs):
        for k, fn in calls.items():
            t0 = clock()
            fn()
            times[k].append(clock() - t0)
    return times


def time_budgeted(fn: Callable[[], object], budget_ms: float, least: int = 5, most: int = 200,
                  clock: Callable[[], float] = time.perf_counter) -> float:
    """The *fastest* of at least ``least`` calls (more while ``budget_ms`` lasts), in ms, after two warm-up calls.
    Other work on the machine only ever adds time, so the minimum is the figure it disturbs least: what a
    per-layer latency table stores."""
    for _ in range(2):
        fn()
    times = []
    start = clock()
    while len(times) < least or (len(times) < most and (clock() - start) * 1000 < budget_ms):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return float(np.min(times) * 1000)


@dataclass(frozen=True)
class Speedup:
    """``reference`` time / ``model`` time from interleaved calls: the ratio of their fast tails (the 10th
    percentile of each), and the 90 % bootstrap interval of that ratio (its spread: how far another measurement
    could land)."""
    value: float
    low: float
    high: float
    pairs: int

    @property
    def spread(self) -> float:
        return (self.high - self.low) / 2

    def to_dict(self) -> dict:
        return {"speedup": self.value, "low": self.low, "high": self.high, "spread": self.spread,
                "pairs": self.pairs}


FAST_TAIL = 10  # percentile: other work on the machine only ever adds time, so the fast calls are the model's own


def paired_speedup(reference_s: list[float], model_s: list[float], resamples: int = 400, seed: int = 0,
                   q: float = FAST_TAIL) -> Speedup:
    """Speedup of the model over the reference from interleaved timings: the ratio of the ``q``-th percentiles.
    A burst of load slows both calls of a round; background work that lasts shifts the medians but much less the
    fast tail, which is what the machine does when it runs the model alone. The interval resamples the rounds
    (pairs), so a load that hit one model more than the other widens it."""
    ref, mod = np.asarray(reference_s, np.float64), np.asarray(model_s, np.float64)
    if len(ref) == 0 or len(ref) != len(mod):
        raise ValueError("no timings, or not paired")

    def ratio(idx) -> np.ndarray:
        return np.percentile(ref[idx], q, axis=-1) / np.maximum(np.percentile(mod[idx], q, axis=-1), 1e-12)
    value = float(ratio(np.arange(len(ref))))
    if len(ref) < 3:
        return Speedup(value, value, value, len(ref))
    boot = ratio(np.random.default_rng(seed).integers(0, len(ref), size=(resamples, len(ref))))
    low, high = np.percentile(boot, [5, 95])
    return Speedup(value, float(min(low, value)), float(max(high, value)), len(ref))
