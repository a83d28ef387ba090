"""A runtime is one registered object: what it is called, whether this machine can run it (and which extra
installs it), how it loads a model at its precision, the channel grid its fast kernels want, how it times one
layer for a latency table, and the fingerprint (device, library versions, precision, threads) that keys caches
and run records. Code that has a runtime's name asks :func:`get_runtime` for the object; nothing compares
runtime names.

Adding a runtime: subclass :class:`Runtime` in a module of this package, implement :meth:`Runtime.load` (and
:meth:`Runtime.layer_ms` / :meth:`Runtime.grid` if it plans), and :func:`register` an instance; import the module
in ``prunekit/runtimes/__init__.py``. The CLI's ``--runtime`` choices, the configs' checks, ``bench``'s frontier
and the latency tables all read the registry.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from prunekit.errors import PrunekitError
from prunekit.runtimes.machine import cpu_info
from prunekit.runtimes.timing import LatencyStats, interleaved, summarize


@dataclass(frozen=True)
class Grid:
    """The channel multiple a runtime's fast kernels want, how it was found and (when measured) what was seen."""
    multiple: int
    detected: str
    measured: dict = field(default_factory=dict)  # width → ms, when the grid was measured on this machine

    def to_dict(self) -> dict:
        return {"multiple": self.multiple, "detected": self.detected, **({"measured_ms": self.measured}
                                                                          if self.measured else {})}


def candidate_widths(channels: int, round_to: int, min_keep: int = 1, max_options: int = 64) -> list[int]:
    """Kept widths a group of ``channels`` may take, ascending, ending with ``channels`` (the group untouched)."""
    step = max(1, round_to)
    widths = [w for w in range(step, channels, step) if w >= min_keep]
    if len(widths) > max_options - 1:  # evenly spread, on the grid
        pick = np.unique(np.round(np.linspace(0, len(widths) - 1, max_options - 1)).astype(int))
        widths = [widths[i] for i in pick]
    return widths + [channels]


@dataclass
class Runner:
    """A loaded model: call it with one batch (a float32 array); ``precision`` is what the runtime really runs."""
    fn: Callable[[np.ndarray], Any]
    precision: str

    def __call__(self, x: np.ndarray):
        return self.fn(x)


class Runtime:
    name: str = ""
    help: str = ""  # one line for --help and the docs
    family: str = ""  # the library: onnxruntime, openvino, torch
    precision: str = "fp32"  # what it is asked to run: fp32, int8, auto (the runtime's default), bf16
    module: str = ""  # the Python module whose presence makes it available
    extra: str | None = None  # the prunekit extra that installs it (None: a core dependency)
    artifact: str = "onnx"  # what it runs: an exported ONNX file ("onnx") or the PyTorch module ("torch")
    quantized: bool = False  # runs the INT8 (QDQ) file prunekit quantize writes from the fp32 export
    table_proxy: str | None = None  # the runtime whose layer timings its latency table uses (None: its own)
    frontier: bool = True  # a deployment users ship by default (bench's frontier, the fastest dense baseline)
    depth: bool = True  # --depth auto may drop residual branches for it (False where that was measured to cost)

    # ---------------------------------------------------------------------------------------------- availability
    def missing(self) -> str | None:
        """Why this machine cannot run it (None when it can)."""
        if self.module and importlib.util.find_spec(self.module) is None:
            how = f"pip install 'prunekit[{self.extra}]'" if self.extra else f"pip install {self.module}"
            return f"runtime {self.name} needs {self.module}, which is not installed ({how})"
        return None

    def require(self) -> Runtime:
        why = self.missing()
        if why:
            raise PrunekitError(why)
        return self

    def versions(self) -> dict:
        """Versions of the libraries that decide its kernels."""
        return {}

    # ------------------------------------------------------------------------------------------------- running
    def load(self, artifact, threads: int, input_shape: tuple[int, ...]) -> Runner:
        """``artifact``: an ONNX path (or, for ``artifact == "torch"`` runtimes, an ``nn.Module``) loaded for
        batches of ``input_shape`` with ``threads`` intra-op threads."""
        raise NotImplementedError

    def measure(self, artifacts: dict[str, Any], input_size: tuple[int, ...], batch: int, threads: int = 1,
                warmup: int = 10, runs: int = 100, clock=None) -> Measured:
        """Every artifact loaded, then timed interleaved (A B A B …) on the same random batch."""
        shape = (batch, *input_size)
        runners = {k: self.require().load(a, threads, shape) for k, a in artifacts.items()}
        return time_runners(runners, shape, warmup, runs, clock)

    # ------------------------------------------------------------------------------------------------ planning
    def grid(self, threads: int = 1) -> Grid:
        """The channel multiple every pruned group keeps with ``--round-to auto``."""
        return Grid(1, f"{self.name}: no channel grid known")

    def layer_ms(self, shape, threads: int, budget_ms: float) -> float:
        """One layer's own time (ms) at ``shape``: the layer alone less the fixed cost of a call."""
        raise PrunekitError(f"runtime {self.name} cannot time layers for a latency table")

    def fingerprint(self, threads: int = 1) -> dict:
        """What a measurement on this runtime is valid for: the device, the libraries, the precision, threads."""
        cpu = cpu_info()
        return {"runtime": self.name, "precision": self.precision, "cpu": cpu.model, "cores": cpu.cores,
                "isa": cpu.isa, "threads": threads, **self.versions()}

    def key(self, threads: int = 1) -> str:
        return hashlib.sha1(json.dumps(self.fingerprint(threads), sort_keys=True).encode()).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"<runtime {self.name}>"


@dataclass
class Measured:
    """What :meth:`Runtime.measure` saw: statistics per artifact, the raw interleaved times, the precision run."""
    stats: dict[str, LatencyStats]
    times: dict[str, list[float]]
    precision: dict[str, str]

    def speedup(self, reference: str, model: str):
        from prunekit.runtimes.timing import paired_speedup

        return paired_speedup(self.times[reference], self.times[model])


def time_runners(runners: dict[str, Runner], shape: tuple[int, ...], warmup: int, runs: int,
                 clock=None) -> Measured:
    """Loaded models timed interleaved on one random batch of ``shape`` (seed 0)."""
    import time

    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    times = interleaved({k: functools.partial(r, x) for k, r in runners.items()}, warmup, runs,
                        clock or time.perf_counter)
    return Measured({k: summarize(v, shape[0]) for k, v in times.items()}, times,
                    {k: r.precision for k, r in runners.items()})


RUNTIMES: dict[str, Runtime] = {}


def register(runtime: Runtime) -> Runtime:
    if not runtime.name or runtime.name in RUNTIMES:
        raise ValueError(f"runtime name {runtime.name!r} is empty or taken")
    RUNTIMES[runtime.name] = runtime
    return runtime


def runtime_names() -> tuple[str, ...]:
    return tuple(RUNTIMES)


def get_runtime(name: str | Runtime) -> Runtime:
    """The registered runtime called ``name``; an unknown name is a PrunekitError listing them."""
    if isinstance(name, Runtime):
        return name
    if name not in RUNTIMES:
        raise PrunekitError(f"--runtime must be one of {', '.join(RUNTIMES)}, got {name!r}")
    return RUNTIMES[name]


def available_runtimes(artifact: str | None = None, frontier: bool = False) -> list[Runtime]:
    """The registered runtimes this machine can run (those that run ``artifact`` files, if given; with
    ``frontier``, only the deployments users ship by default, not a precision variant such as OpenVINO f32)."""
    return [r for r in RUNTIMES.values() if (artifact is None or r.artifact == artifact)
            and (r.frontier or not frontier) and r.missing() is None]
