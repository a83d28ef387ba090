"""OpenVINO on the CPU (``pip install 'prunekit[openvino]'``), reading prunekit's ONNX files directly:

- ``openvino-cpu``: OpenVINO's default settings, which is what an Intel-CPU user ships (and what
  ``benchmark_app`` times): bf16 where the CPU has it in hardware (AMX or AVX-512 BF16), else f32. Which one
  ran is read back from the compiled model and recorded;
- ``openvino-cpu-f32``: ``INFERENCE_PRECISION_HINT=f32``;
- ``openvino-cpu-int8``: the INT8 QDQ file of ``prunekit quantize`` (OpenVINO runs its int8 kernels from the
  Q/DQ pairs).

Models are compiled for a static batch (``PERFORMANCE_HINT=LATENCY``, one stream, ``--threads`` inference
threads), as they are timed.

Its channel grid is **measured** on this machine at this precision (:func:`measure_grid`): a 3×3 conv is timed
at every width from 8 to 64, and the grid is the largest multiple m such that a width off the grid runs no
faster than the next multiple of m (it pays for the whole block: :func:`grid_from_times`). The result is
cached per fingerprint and recorded in latency tables and run records.
"""
from __future__ import annotations

import functools
import os
import tempfile

from prunekit.errors import PrunekitError, describe
from prunekit.files import atomic_write_json, cache_dir, read_json
from prunekit.runtimes.base import Grid, Runner, Runtime, register
from prunekit.runtimes.layers import LayerShape, layer_onnx, own_time_ms

GRID_WIDTHS = tuple(range(8, 65))
GRID_CANDIDATES = (32, 16, 8, 4, 2)


@functools.lru_cache(maxsize=1)
def _core():
    import openvino as ov

    return ov.Core()


def _type_name(t) -> str:
    text = str(t.to_string() if hasattr(t, "to_string") else t).lower()
    return {"bfloat16": "bf16", "float32": "f32", "float16": "f16"}.get(text, text)


class OpenVINOCPU(Runtime):
    family = "openvino"
    module = "openvino"
    extra = "openvino"

    def __init__(self, name: str, precision: str, help: str, hint: str | None, quantized: bool = False,
                 table_proxy: str | None = None, frontier: bool = True):
        self.name, self.precision, self.help, self.hint = name, precision, help, hint
        self.quantized, self.table_proxy, self.frontier = quantized, table_proxy, frontier

    def versions(self) -> dict:
        import openvino as ov

        return {"openvino": ov.__version__, "ran": self.ran_precision()}

    def compile(self, path: str, threads: int, input_shape: tuple[int, ...] | None):
        core = _core()
        try:
            model = core.read_model(path)
            if input_shape is not None:
                model.reshape(list(input_shape))
            config = {"INFERENCE_NUM_THREADS": int(threads), "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"}
            if self.hint:
                config["INFERENCE_PRECISION_HINT"] = self.hint
            return core.compile_model(model, "CPU", config)
        except Exception as e:
            raise PrunekitError(f"OpenVINO cannot load {path}: {describe(e)}") from e

    def load(self, artifact, threads: int, input_shape) -> Runner:
        compiled = self.compile(artifact, threads, input_shape)
        request = compiled.create_infer_request()
        ran = _type_name(compiled.get_property("INFERENCE_PRECISION_HINT"))
        return Runner(lambda x: request.infer({0: x}, share_inputs=True), f"int8+{ran}" if self.quantized else ran)

    @functools.lru_cache(maxsize=4)  # noqa: B019 (a few registered instances, alive for the process)
    def ran_precision(self) -> str:
        """What OpenVINO runs floating-point layers in here at this setting (bf16 or f32), read back from a
        compiled one-layer model."""
        with tempfile.TemporaryDirectory(prefix="prunekit-ov-") as d:
            path = os.path.join(d, "probe.onnx")
            layer_onnx(LayerShape("conv", 16, 16, 8, 8, (3, 3), (1, 1), (1, 1)), path)
            return _type_name(self.compile(path, 1, None).get_property("INFERENCE_PRECISION_HINT"))

    def layer_ms(self, shape, threads: int, budget_ms: float) -> float:
        def load(path):
            request = self.compile(path, threads, None).create_infer_request()
            return lambda x: request.infer({0: x}, share_inputs=True)
        return own_time_ms(shape, load, budget_ms)

    def grid(self, threads: int = 1) -> Grid:
        self.require()
        path = os.path.join(cache_dir(), "runtimes", f"grid-{self.key(threads)}.json")
        try:
            doc = read_json(path, "grid cache")
            return Grid(int(doc["multiple"]), str(doc["detected"]), {int(k): float(v) for k, v in
                                                                      doc["measured_ms"].items()})
        except (PrunekitError, KeyError, TypeError, ValueError):
            pass
        grid = measure_grid(lambda s: self.layer_ms(s, threads, 15.0), f"{self.name} ({self.ran_precision()})")
        try:
            atomic_write_json(path, grid.to_dict())
        except OSError:
            pass  # a cache we cannot write only costs measuring again
        return grid


def grid_from_times(times: dict[int, float], share: float = 0.7) -> int:
    """The largest multiple m for which widths off the grid cost as much as the next multiple of m: for a width w
    between two measured multiples lo < w < hi, its place on the step, (t(w) − t(lo)) / (t(hi) − t(lo)), is near
    1 on a staircase of block m (w pays for the whole block) and near (w − lo) / m where time follows channels.
    m is the grid when that place is ≥ 0.75 for at least ``share`` of the widths (steps too flat to tell are
    skipped); 1 when no m is."""
    for m in GRID_CANDIDATES:
        places = []
        for w, t in times.items():
            lo, hi = w - w % m, w - w % m + m
            if w % m == 0 or lo not in times or hi not in times:
                continue
            rise = times[hi] - times[lo]
            if rise > 0.05 * abs(times[hi]):
                places.append((t - times[lo]) / rise)
        if places and sum(p >= 0.75 for p in places) >= share * len(places):
            return m
    return 1


def measure_grid(layer_ms, what: str, widths=GRID_WIDTHS) -> Grid:
    """Time a 3×3 conv (64 input channels, 16×16 maps, batch 8) at every output width and read its grid. Output
    channels are what kernels block (oneDNN's nChw16c on AVX-512); the input side is closer to linear."""
    from prunekit.progress import info

    info(f"measuring {what}'s channel grid on this CPU ({len(widths)} conv widths, once per machine)")
    times = {w: layer_ms(LayerShape("conv", 64, w, 16, 16, (3, 3), (1, 1), (1, 1), 1, 8)) for w in widths}
    m = grid_from_times(times)
    how = (f"{what}: measured on this CPU, a 3×3 conv with {widths[0]}–{widths[-1]} output channels pays for "
           f"whole blocks of {m}" if m > 1 else f"{what}: measured on this CPU, no channel staircase (every width "
           "pays only for its channels)")
    return Grid(m, how, times)


register(OpenVINOCPU("openvino-cpu", "auto", "OpenVINO on the CPU, its default precision (bf16 where the CPU has "
                     "it, else f32)", hint=None))
register(OpenVINOCPU("openvino-cpu-f32", "fp32", "OpenVINO on the CPU, f32 (INFERENCE_PRECISION_HINT=f32)",
                     hint="f32", frontier=False))  # a variant on request: OpenVINO users ship its default
register(OpenVINOCPU("openvino-cpu-int8", "int8", "OpenVINO on the CPU, the INT8 QDQ file of prunekit quantize "
                     "(latency tables time the float layers)", hint=None, quantized=True,
                     table_proxy="openvino-cpu"))
