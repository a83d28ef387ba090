"""Per-layer latency lookup table: what one conv / linear layer of a given shape costs on the runtime the
model ships to, measured once per machine and cached on disk.

A :class:`~prunekit.runtimes.layers.LayerShape` is everything that decides a layer's time (input channels,
output channels, input height and width, kernel, stride, padding, groups, batch). :class:`LatencyTable` asks
the runtime (:mod:`prunekit.runtimes`: onnxruntime, OpenVINO, CUDA, … each times a one-layer model its own way)
for a layer of that shape alone and remembers it in ``$PRUNEKIT_CACHE/latency/<fingerprint>.json``, keyed by the
runtime's fingerprint (CPU or GPU, library versions, precision, threads). A shape with no channels (a layer a
dropped residual branch removes) costs nothing.

Uses (NVIDIA HALP's idea, on our cost model):

- ``--cost latency``: Algorithm 3 scales a group's threshold by the latency its channels cost, not by params;
- ``latency=`` / ``speedup=`` targets: a candidate's latency is *predicted* from its layer shapes
  (:func:`predict_ms`), so planning never exports and times a probe; the delivered model is still measured for
  real and reported beside the prediction.
"""
from __future__ import annotations

import json
import os

import numpy as np

from prunekit.errors import PrunekitError
from prunekit.files import atomic_write_json, read_json
from prunekit.runtimes import get_runtime
from prunekit.runtimes.layers import LayerShape


TABLE_FORMAT = 1  # version of a target-device table file (prunekit latency-table)


class LatencyTable:
    """Layer shape → latency in ms on ``runtime`` with ``threads`` intra-op threads, cached on disk. A runtime
    with a ``table_proxy`` (an int8 one) is timed by that runtime's layers, and says so in :attr:`timed_on`."""

    fixed: str | None = None  # the file of a target-device table (lookups only)
    device: dict | None = None
    grid: tuple[int, str] | None = None  # a target-device table's channel grid (multiple, how it was found)

    def __init__(self, runtime: str = "onnxruntime-cpu", threads: int = 1, path: str | None = None,
                 budget_ms: float = 60.0):
        from prunekit.files import cache_dir

        rt = get_runtime(runtime)
        self.runtime, self.threads, self.budget_ms = rt.name, threads, budget_ms
        self.timer = get_runtime(rt.table_proxy or rt.name)
        self.timed_on = self.timer.name
        self._path = path
        self._cache_dir = cache_dir()
        self.entries: dict[str, float] = {}
        self.measured = 0  # shapes timed by this object (the rest came from the cache)
        self._dirty = False
        if path and path != os.devnull:
            self._load(path)
        self._loaded = path is not None

    @property
    def path(self) -> str:
        """The cache file: named by the timing runtime's fingerprint (computed on first use)."""
        if self._path is None:
            self._path = os.path.join(self._cache_dir, "latency", f"{self.timer.require().key(self.threads)}.json")
        return self._path

    def _load(self, path: str) -> None:
        try:
            with open(path) as f:
                data = json.load(f)
            self.entries = {k: float(v) for k, v in data.get("entries", {}).items()}
        except (OSError, ValueError, AttributeError):
            self.entries = {}

    @classmethod
    def from_file(cls, path: str) -> LatencyTable:
        """A table measured on the target device (``prunekit latency-table``): looked up only, never measured
        here; a shape it lacks is an error naming it."""
        doc = read_table(path)
        table = cls(doc.get("runtime", "onnxruntime-cpu"), int(doc.get("threads", 1)), path=os.devnull)
        device = doc.get("device", {})
        table.entries, table.fixed, table.device = doc["entries"], path, device
        grid = device.get("grid") or {}
        multiple = grid.get("multiple", device.get("nchwc_block"))
        table.grid = (int(multiple), grid.get("detected", device.get("detected", ""))) if multiple else None
        return table

    def ms(self, shape: LayerShape) -> float:
        if shape.empty:
            return 0.0
        if not self._loaded:
            self._load(self.path)
            self._loaded = True
        key = shape.key()
        if key not in self.entries and self.fixed:
            raise PrunekitError(f"the latency table {self.fixed} has no entry for the layer shape {key}: build it "
                                "for this model (same batch, grid and widths) with prunekit latency-table")
        if key not in self.entries:
            self.entries[key] = self._measure(shape)
            self.measured += 1
            self._dirty = True
        return self.entries[key]

    def total(self, shapes) -> float:
        return float(sum(self.ms(s) for s in shapes))

    def save(self) -> None:
        if self._dirty and not self.fixed:
            try:
                atomic_write_json(self.path, {"runtime": self.runtime, "timed_on": self.timed_on,
                                              "threads": self.threads,
                                              "fingerprint": self.timer.fingerprint(self.threads),
                                              "entries": dict(sorted(self.entries.items()))})
            except OSError:
                pass  # a cache we cannot write only costs re-measuring
            self._dirty = False

    def _measure(self, shape: LayerShape) -> float:
        return self.timer.require().layer_ms(shape, self.threads, self.budget_ms)


def table_for(runtime: str, threads: int, path: str | None = None) -> LatencyTable:
    """The table a job plans with: the target device's file (``--latency-table``), else this machine's cache.
    A file measured on another runtime than ``runtime`` (or the runtime whose layers time it) is refused."""
    if not path:
        return LatencyTable(runtime, threads)
    table = LatencyTable.from_file(path)
    rt = get_runtime(runtime)
    if table.runtime not in (rt.name, rt.table_proxy):
        raise PrunekitError(f"{path} holds {table.runtime} timings: use it with --runtime {table.runtime} (or "
                            f"measure a table for {rt.name} with prunekit latency-table --runtime {rt.name})")
    return table


def predict_ms(dense_ms: float, table_dense: float, table_model: float) -> float:
    """Whole-model latency of a pruned model from the table: the dense model's measured time scaled by the
    ratio of the tables' sums (layers the table cannot see, and per-call overheads, scale alike)."""
    return dense_ms * table_model / table_dense if table_dense > 0 else dense_ms


def table_goal(dense_ms: float, table_dense: float, target_ms: float) -> float:
    """The table sum a model must reach for :func:`predict_ms` to give ``target_ms`` (its inverse)."""
    return target_ms / dense_ms * table_dense


def fixed_and_scaled(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares ``ms = fixed + per · table_sum`` over the models timed so far (the dense model first): the
    part of a model's time that pruning channels does not shrink (per-call costs, element-wise ops, an int8
    model's quantize / dequantize steps) and the ms per unit of the table. With no usable slope, the
    proportional model (fixed 0) that :func:`predict_ms` assumes."""
    x, y = np.array([p[0] for p in points]), np.array([p[1] for p in points])
    if len(points) >= 2 and np.ptp(x) > 0:
        per, fixed = np.polyfit(x, y, 1)
        if per > 0:
            return max(float(fixed), 0.0), float(per)
    return 0.0, float(y[0] / x[0]) if x[0] > 0 else 1.0


def read_table(path: str) -> dict:
    """A table file written by ``prunekit latency-table`` (:func:`prunekit.deploy.device_table.build_table`),
    checked."""
    doc = read_json(path, "latency table")
    if not isinstance(doc, dict) or doc.get("prunekit_latency_table") != TABLE_FORMAT or not isinstance(
            doc.get("entries"), dict):
        raise PrunekitError(f"{path} is not a prunekit latency table (write one with prunekit latency-table)")
    try:
        doc["entries"] = {str(k): float(v) for k, v in doc["entries"].items()}
    except (TypeError, ValueError):
        raise PrunekitError(f"{path}: the latency table's entries are not numbers") from None
    if not all(np.isfinite(v) and v >= 0 for v in doc["entries"].values()):
        raise PrunekitError(f"{path}: the latency table holds negative or non-finite times")
    return doc
