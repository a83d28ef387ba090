"""Per-layer latency lookup table: what one conv / linear layer of a given shape costs on the runtime the
model ships to, measured once per machine and cached on disk.

A :class:`LayerShape` is everything that decides a layer's time (input channels, output channels, input
height and width, kernel, stride, padding, groups, batch). :class:`LatencyTable` times a layer of that shape
alone (onnxruntime CPU: a one-node ONNX model, the bench's session settings; CUDA: the PyTorch layer on the
GPU) and remembers it in ``$PRUNEKIT_CACHE/latency/<machine>.json``, keyed by CPU, onnxruntime version,
runtime and threads.

Uses (NVIDIA HALP's idea, on our cost model):

- ``--cost latency``: Algorithm 3 scales a group's threshold by the latency its channels cost, not by params;
- ``latency=`` targets: a candidate's latency is *predicted* from its layer shapes (:func:`predict_ms`), so the
  search never exports and times a probe; the delivered model is still measured for real and reported beside
  the prediction.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass

import numpy as np

from prunekit.errors import PrunekitError
from prunekit.files import atomic_write_json, read_json
from prunekit.deploy.ortsession import session


TABLE_FORMAT = 1  # version of a target-device table file (prunekit latency-table)


@dataclass(frozen=True)
class LayerShape:
    kind: str  # "conv" or "linear"
    in_c: int
    out_c: int
    h: int = 1  # input height / width (conv); tokens (linear: h)
    w: int = 1
    k: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    pad: tuple[int, int] = (0, 0)
    groups: int = 1
    batch: int = 1

    def key(self) -> str:
        return (f"{self.kind}:{self.in_c}>{self.out_c}@{self.h}x{self.w}:k{self.k[0]}x{self.k[1]}"
                f":s{self.stride[0]}x{self.stride[1]}:p{self.pad[0]}x{self.pad[1]}:g{self.groups}:b{self.batch}")

    def resized(self, in_c: int, out_c: int) -> LayerShape:
        groups = in_c if self.groups > 1 and self.groups == self.in_c == self.out_c else self.groups  # depthwise
        return LayerShape(self.kind, in_c, out_c, self.h, self.w, self.k, self.stride, self.pad, groups, self.batch)


def layer_shapes(model, input_size: tuple[int, int, int], batch: int = 1) -> dict[str, LayerShape]:
    """The shape of every Conv2d / Linear of ``model`` on inputs of ``input_size``, from one forward pass."""
    import torch.nn as nn

    from prunekit.core.metrics import trace_layers

    shapes: dict[str, LayerShape] = {}

    def visit(name, mod, x, out):
        if isinstance(mod, nn.Conv2d):
            pad = mod.padding if isinstance(mod.padding, tuple) else (0, 0)
            shapes[name] = LayerShape("conv", mod.in_channels, mod.out_channels, int(x.shape[-2]), int(x.shape[-1]),
                                      tuple(mod.kernel_size), tuple(mod.stride), tuple(pad), mod.groups, batch)
        else:
            tokens = int(np.prod(x.shape[1:-1])) if x.dim() > 2 else 1
            shapes[name] = LayerShape("linear", mod.in_features, mod.out_features, tokens, 1, batch=batch)
    trace_layers(model, input_size, visit)
    return shapes


def machine_key(runtime: str, threads: int) -> str:
    """What a cached table is valid for: the CPU (or, for ``cuda``, the GPU with torch's CUDA and cuDNN
    versions), the runtime's version and the threads. Another machine or library version gets a new table."""
    import onnxruntime

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    text = f"{cpu}|{os.cpu_count()}|onnxruntime {onnxruntime.__version__}|{runtime}|{threads} threads"
    if runtime == "cuda":
        text += "|" + cuda_identity()
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def cuda_identity() -> str:
    """The current GPU and the libraries that decide its kernels (name, capability, torch, CUDA, cuDNN)."""
    import torch

    if not torch.cuda.is_available():
        return "no cuda"
    d = torch.cuda.current_device()
    return (f"{torch.cuda.get_device_name(d)}|sm{''.join(map(str, torch.cuda.get_device_capability(d)))}|"
            f"torch {torch.__version__}|cuda {torch.version.cuda}|cudnn {torch.backends.cudnn.version()}")


class LatencyTable:
    """Layer shape → median latency in ms on ``runtime`` with ``threads`` intra-op threads, cached on disk."""

    def __init__(self, runtime: str = "onnxruntime-cpu", threads: int = 1, path: str | None = None,
                 budget_ms: float = 60.0):
        from prunekit.files import cache_dir

        if runtime == "onnxruntime-cpu-int8":
            runtime = "onnxruntime-cpu"  # layers are timed in fp32: an approximation for int8 deployments
        if runtime not in ("onnxruntime-cpu", "cuda"):
            raise PrunekitError(f"no latency table for runtime {runtime!r}")
        self.runtime, self.threads, self.budget_ms = runtime, threads, budget_ms
        self.path = path or os.path.join(cache_dir(), "latency", f"{machine_key(runtime, threads)}.json")
        self.entries: dict[str, float] = {}
        self.measured = 0  # shapes timed by this object (the rest came from the cache)
        self._dirty = False
        try:
            with open(self.path) as f:
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
        table.entries, table.fixed, table.device = doc["entries"], path, doc.get("device", {})
        table.nchwc = doc.get("device", {}).get("nchwc_block"), doc.get("device", {}).get("detected", "")
        return table

    fixed: str | None = None  # the file of a target-device table (lookups only)
    device: dict | None = None

    def ms(self, shape: LayerShape) -> float:
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
                atomic_write_json(self.path, {"runtime": self.runtime, "threads": self.threads,
                                              "entries": dict(sorted(self.entries.items()))})
            except OSError:
                pass  # a cache we cannot write only costs re-measuring
            self._dirty = False

    # ------------------------------------------------------------------------------------ measuring
    def _measure(self, shape: LayerShape) -> float:
        if self.runtime == "cuda":
            return self._measure_cuda(shape)
        x = np.random.default_rng(0).standard_normal(_input_dims(shape)).astype(np.float32)
        times = {}
        with tempfile.TemporaryDirectory(prefix="prunekit-lut-") as d:
            for what in ("layer", "call"):  # the layer, and the cost of a call that does nothing with x
                path = os.path.join(d, f"{what}.onnx")
                _save_layer_onnx(shape, path, identity=what == "call")
                sess = session(path, self.threads)
                times[what] = _time(lambda sess=sess: sess.run(None, {"x": x}), self.budget_ms)
        # a model runs its layers in one call: count each layer's own time, not the call's fixed cost
        return max(times["layer"] - times["call"], 0.05 * times["layer"])

    def _measure_cuda(self, shape: LayerShape) -> float:
        """The layer as the whole model runs on CUDA (bf16 autocast, channels_last: what
        :func:`prunekit.deploy.bench.model_latency_ms` times), less the fixed cost of one such call."""
        import torch

        if not torch.cuda.is_available():
            raise PrunekitError("a CUDA latency table needs a CUDA GPU on this machine")
        fmt = torch.channels_last if shape.kind == "conv" else torch.contiguous_format
        layer = _torch_layer(shape).cuda().eval().to(memory_format=fmt)
        x = torch.randn(*_input_dims(shape), device="cuda").contiguous(memory_format=fmt)
        times = {}
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            for what, fn in (("layer", layer), ("call", torch.amax)):
                def call(fn=fn):
                    fn(x)
                    torch.cuda.synchronize()
                times[what] = _time(call, self.budget_ms)
        return max(times["layer"] - times["call"], 0.05 * times["layer"])


def table_for(runtime: str, threads: int, path: str | None = None) -> LatencyTable:
    """The table a job plans with: the target device's file (``--latency-table``), else this machine's cache."""
    return LatencyTable.from_file(path) if path else LatencyTable(runtime, threads)


def _input_dims(s: LayerShape) -> tuple[int, ...]:
    return (s.batch, s.in_c, s.h, s.w) if s.kind == "conv" else (s.batch * s.h, s.in_c)


def _time(fn, budget_ms: float) -> float:
    for _ in range(2):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < 5 or (len(times) < 200 and (time.perf_counter() - start) * 1000 < budget_ms):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000)


def _save_layer_onnx(s: LayerShape, path: str, identity: bool = False) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(_input_dims(s)))
    if identity:  # reads x, returns one number: the fixed cost of a call
        graph = helper.make_graph([helper.make_node("ReduceMax", ["x"], ["y"], keepdims=0)], "call", [x_info],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
        return
    if s.kind == "conv":
        w = rng.standard_normal((s.out_c, s.in_c // s.groups, *s.k)).astype(np.float32)
        node = helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=list(s.k), strides=list(s.stride),
                                pads=[s.pad[0], s.pad[1], s.pad[0], s.pad[1]], group=s.groups)
    else:
        w = rng.standard_normal((s.out_c, s.in_c)).astype(np.float32)
        node = helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.zeros(s.out_c, np.float32), "b")]
    graph = helper.make_graph([node], "layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                              list(_input_dims(s)))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def _torch_layer(s: LayerShape):
    import torch.nn as nn

    if s.kind == "conv":
        return nn.Conv2d(s.in_c, s.out_c, s.k, s.stride, s.pad, groups=s.groups)
    return nn.Linear(s.in_c, s.out_c)


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


def shapes_to_dict(shapes: dict[str, LayerShape]) -> dict[str, dict]:
    return {k: asdict(v) for k, v in shapes.items()}


def read_table(path: str) -> dict:
    """A table file written by ``prunekit latency-table`` (:func:`prunekit.deploy.latency_table.build_table`),
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
