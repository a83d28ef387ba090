"""Latency measurement of ONNX models in onnxruntime: fixed intra-op threads, sequential execution, full graph
optimisation, warm-up runs, then timed runs reported as percentiles.

The statistics are computed from a list of timings by :func:`summarize`, so they can be tested on a fake
timer; :func:`measure_onnx` is what the search (``latency=`` targets) and ``prunekit bench`` call.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from collections.abc import Callable

import numpy as np

from prunekit.deploy.ortsession import session


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


def measure_onnx(path: str, input_size: tuple[int, int, int], batch: int = 1, threads: int = 1, warmup: int = 10,
                 runs: int = 100, provider: str = "cpu") -> LatencyStats:
    sess = session(path, threads, provider)
    name = sess.get_inputs()[0].name
    x = np.random.default_rng(0).standard_normal((batch, *input_size)).astype(np.float32)
    return summarize(time_calls(lambda: sess.run(None, {name: x}), warmup, runs), batch)


def measure_pair(paths: dict[str, str], input_size: tuple[int, int, int], batch: int, threads: int = 1,
                 warmup: int = 10, runs: int = 100, provider: str = "cpu",
                 clock: Callable[[], float] = time.perf_counter) -> dict[str, LatencyStats]:
    """Several ONNX models in one process, interleaved (A B A B …) so machine drift hits all of them alike."""
    sessions = {k: session(p, threads, provider) for k, p in paths.items()}
    x = np.random.default_rng(0).standard_normal((batch, *input_size)).astype(np.float32)
    feeds = {k: {s.get_inputs()[0].name: x} for k, s in sessions.items()}
    for _ in range(warmup):
        for k, s in sessions.items():
            s.run(None, feeds[k])
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(runs):
        for k, s in sessions.items():
            t0 = clock()
            s.run(None, feeds[k])
            times[k].append(clock() - t0)
    return {k: summarize(v, batch) for k, v in times.items()}


def measure_torch_pair(models: dict, input_size: tuple[int, int, int], batch: int, threads: int = 1,
                       warmup: int = 5, runs: int = 30) -> dict[str, LatencyStats]:
    """PyTorch eager latency of several models, interleaved, with ``threads`` intra-op threads."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = torch.randn(batch, *input_size)
        with torch.inference_mode():
            for _ in range(warmup):
                for m in models.values():
                    m(x)
            times: dict[str, list[float]] = {k: [] for k in models}
            for _ in range(runs):
                for k, m in models.items():
                    t0 = time.perf_counter()
                    m(x)
                    times[k].append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(old)
    return {k: summarize(v, batch) for k, v in times.items()}


def _is_channel_selection(w: np.ndarray) -> bool:
    """A 1×1 conv whose weight only copies channels (zeros and one constant, at most one non-zero per row and
    per column; 1.0 in fp32, its quantized value in int8): the option-A shortcut. prunekit's counts treat it
    as data movement, so the ONNX count must skip it too."""
    if w.ndim != 4 or w.shape[2:] != (1, 1):
        return False
    m = w.reshape(w.shape[0], w.shape[1])
    nz = m[m != 0]
    return bool(len(nz) and (nz == nz[0]).all() and nz[0] > 0 and ((m != 0).sum(1) <= 1).all()
                and ((m != 0).sum(0) <= 1).all())


def _weight_array(name: str, inits: dict, producers: dict) -> np.ndarray | None:
    """A Conv's weight: an initializer or a Constant, or (QDQ int8 models) the int8 one a DequantizeLinear
    reads."""
    from onnx import numpy_helper

    for _ in range(4):  # through Identity / Cast / DequantizeLinear to an initializer or a Constant
        if name in inits:
            return numpy_helper.to_array(inits[name])
        node = producers.get(name)
        if node is None:
            return None
        if node.op_type == "Constant":
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            return numpy_helper.to_array(value) if value is not None else None
        if node.op_type not in ("Identity", "Cast", "DequantizeLinear"):
            return None
        name = node.input[0]
    return None


def onnx_info(path: str) -> dict:
    """Input size, parameter count (initializer elements) and MACs (Conv, Gemm, MatMul at batch 1, channel
    selections excluded) of an ONNX file."""
    import onnx
    from onnx import shape_inference

    from prunekit.errors import PrunekitError

    try:
        model = onnx.load(path)
    except Exception as e:
        raise PrunekitError(f"cannot read ONNX file {path}: {type(e).__name__}: {str(e).splitlines()[0][:120]}") from e
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    if not inputs:
        raise PrunekitError(f"{path} has no graph input")
    dims = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or min(dims[1:]) <= 0:
        raise PrunekitError(f"{path}: expected an image input (N, C, H, W) with static C, H, W, got {dims}")
    # batch 1 for shape inference
    inputs[0].type.tensor_type.shape.dim[0].dim_value = 1
    inferred = shape_inference.infer_shapes(model)
    shapes = {}
    for v in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input):
        # a symbolic dimension left by shape inference is the batch (set to 1 above): count it as 1
        shapes[v.name] = [d.dim_value if d.HasField("dim_value") else 1 for d in v.type.tensor_type.shape.dim]
    for name, t in inits.items():
        shapes[name] = list(t.dims)
    macs = 0
    producers = {o: n for n in graph.node for o in n.output}
    for node in graph.node:
        if node.op_type == "Conv" and len(node.input) > 1:
            w, out = shapes.get(node.input[1]), shapes.get(node.output[0])
            array = _weight_array(node.input[1], inits, producers)
            if array is not None and _is_channel_selection(array):
                continue  # an option-A shortcut: data movement, not counted (as in run.json)
            if w and out:
                macs += int(np.prod(out)) * int(np.prod(w[1:]))
        elif node.op_type in ("Gemm", "MatMul") and len(node.input) > 1:
            a, b = shapes.get(node.input[0]), shapes.get(node.input[1])
            if a and b:
                k = a[-1]
                n = b[0] if node.op_type == "Gemm" and any(at.name == "transB" and at.i for at in node.attribute) \
                    else b[-1]
                macs += int(np.prod(a[:-1])) * k * n
    params = sum(int(np.prod(t.dims)) for t in graph.initializer if len(t.dims) > 0)
    int8 = sum(int(np.prod(t.dims)) for t in graph.initializer if len(t.dims) > 0
               and t.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8))
    return {"input_size": tuple(dims[1:]), "params": params, "int8_params": int8, "macs": macs}


def compare_speed(dense, pruned, input_size: tuple[int, int, int], runtime: str = "onnxruntime-cpu",
                  batches: tuple[int, ...] = (1, 32), threads: int = 1, budget_s: float = 2.0,
                  calibration: np.ndarray | None = None) -> dict:
    """Dense vs pruned on the deployment runtime, interleaved, a few seconds per batch size: what ``prune``
    reports at its end. onnxruntime-cpu exports both models (TorchScript exporter, fast) to a temporary folder
    (onnxruntime-cpu-int8: then quantizes both, calibrated on ``calibration``); cuda times PyTorch eager on the
    GPU (bf16 autocast, channels_last) when one is there."""
    import tempfile

    import torch

    result = {"runtime": runtime, "threads": threads, "batches": []}
    if runtime == "cuda":
        if not torch.cuda.is_available():
            return {**result, "skipped": "no CUDA GPU on this machine: time it where it ships (prunekit bench)"}
        models = {"dense": dense, "pruned": pruned}
        for b in batches:
            stats = measure_torch_cuda(models, input_size, b, dtype="bf16", channels_last=True, runs=20, warmup=5)
            result["batches"].append(_speed_row(b, stats))
        return result
    from prunekit.deploy.export import export_onnx

    with tempfile.TemporaryDirectory(prefix="prunekit-speed-") as d:
        paths = {}
        for tag, model in (("dense", dense), ("pruned", pruned)):
            paths[tag] = os.path.join(d, f"{tag}.onnx")
            export_onnx(model, torch.randn(2, *input_size), paths[tag], exporter="torchscript")
            if runtime == "onnxruntime-cpu-int8":
                from prunekit.deploy.quantize import int8_path, quantize_onnx

                calib = calibration if calibration is not None else np.random.default_rng(0).standard_normal(
                    (32, *input_size)).astype(np.float32)
                quantize_onnx(paths[tag], int8_path(paths[tag]), calib, calib[:8])
                paths[tag] = int8_path(paths[tag])
        for b in batches:
            probe = measure_pair(paths, input_size, b, threads, warmup=1, runs=1)
            per_pair = sum(st.p50_ms for st in probe.values()) / 1000
            runs = int(min(30, max(3, budget_s / max(per_pair, 1e-6))))
            result["batches"].append(_speed_row(b, measure_pair(paths, input_size, b, threads, warmup=2, runs=runs)))
    return result


def cuda_rows(models: dict, input_size, batch: int, warmup: int = 10, runs: int = 50) -> list[dict]:
    """Dense vs pruned in PyTorch eager on CUDA, in fp32 and bf16 autocast, contiguous and channels_last."""
    rows = []
    for dtype in ("fp32", "bf16"):
        for channels_last in (False, True):
            st = measure_torch_cuda(models, input_size, batch, dtype=dtype, channels_last=channels_last,
                                    warmup=warmup, runs=runs)
            rows.append({"dtype": dtype, "layout": "channels_last" if channels_last else "contiguous",
                         **{k: v for k, v in _speed_row(batch, st).items() if k != "batch"}})
    return rows


def model_latency_ms(model, input_size: tuple[int, int, int], runtime: str = "onnxruntime-cpu", threads: int = 1,
                     batch: int = 1, runs: int = 50) -> float:
    """p50 latency (ms) of a PyTorch model on the deployment runtime: onnxruntime CPU (exported with the
    TorchScript exporter to a temporary file) or PyTorch eager on CUDA."""
    import tempfile

    import torch

    if runtime == "cuda":
        return measure_torch_cuda({"m": model}, input_size, batch, dtype="bf16", channels_last=True,
                                  runs=runs)["m"].p50_ms
    from prunekit.deploy.export import export_onnx

    with tempfile.TemporaryDirectory(prefix="prunekit-latency-") as d:
        path = os.path.join(d, "model.onnx")
        export_onnx(model, torch.randn(2, *input_size), path, exporter="torchscript")
        if runtime == "onnxruntime-cpu-int8":  # calibration values do not change the time
            from prunekit.deploy.quantize import int8_path, quantize_onnx

            calib = np.random.default_rng(0).standard_normal((16, *input_size)).astype(np.float32)
            quantize_onnx(path, int8_path(path), calib, calib[:4])
            path = int8_path(path)
        return measure_onnx(path, input_size, batch, threads, warmup=10, runs=runs).p50_ms


def _speed_row(batch: int, stats: dict[str, LatencyStats]) -> dict:
    return {"batch": batch, "dense_ms": stats["dense"].p50_ms, "pruned_ms": stats["pruned"].p50_ms,
            "speedup": stats["dense"].p50_ms / stats["pruned"].p50_ms, "runs": stats["dense"].runs}


def speed_summary(speed: dict | None) -> str:
    """``speedup 1.4× (batch 1), 1.7× (batch 32) on onnxruntime-cpu`` for a summary line ('' when not measured)."""
    if not speed or not speed.get("batches"):
        return f"speed not measured ({speed['skipped']})" if speed and speed.get("skipped") else ""
    parts = ", ".join(f"{r['speedup']:.2f}× (batch {r['batch']})" for r in speed["batches"])
    slower = [r["batch"] for r in speed["batches"] if r["speedup"] < 1]
    text = f"speedup {parts} on {speed['runtime']}"
    return text + (f" — SLOWER than dense at batch {', '.join(map(str, slower))}" if slower else "")


def measure_torch_cuda(models: dict, input_size: tuple[int, int, int], batch: int, *, dtype: str = "fp32",
                       channels_last: bool = False, warmup: int = 10, runs: int = 50,
                       device: str = "cuda") -> dict[str, LatencyStats]:
    """PyTorch eager latency on a CUDA device, models interleaved, each call timed with CUDA events after a
    synchronisation; ``dtype`` fp32, bf16 or fp16 (autocast); ``channels_last`` memory format."""
    import copy

    import torch

    if not torch.cuda.is_available():
        from prunekit.errors import PrunekitError

        raise PrunekitError("no CUDA GPU is available to PyTorch on this machine (use --device cpu)")
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    placed = {k: copy.deepcopy(m).eval().to(device).to(memory_format=fmt) for k, m in models.items()}
    x = torch.randn(batch, *input_size, device=device).contiguous(memory_format=fmt)
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(dtype)
    times: dict[str, list[float]] = {k: [] for k in placed}
    with torch.inference_mode(), torch.autocast("cuda", dtype=amp or torch.float32, enabled=amp is not None):
        for i in range(warmup + runs):
            for k, m in placed.items():
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                torch.cuda.synchronize()
                start.record()
                m(x)
                end.record()
                torch.cuda.synchronize()
                if i >= warmup:
                    times[k].append(start.elapsed_time(end) / 1000)
    return {k: summarize(v, batch) for k, v in times.items()}
