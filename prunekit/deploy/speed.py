"""Latency of models on a deployment runtime (:mod:`prunekit.runtimes`): an ONNX file timed on its own
(:func:`measure_onnx`), several interleaved (:func:`measure_pair`), a PyTorch model on the runtime it ships to
(:func:`model_latency_ms`), dense vs pruned at the end of a prune (:func:`compare_speed`), and what an ONNX file
holds (:func:`onnx_info`: input size, parameters, MACs).

Runtimes that run ONNX files get the model exported (TorchScript exporter, fast) to a temporary folder and, for
an int8 runtime, quantized (:func:`deployables`). The statistics come from :mod:`prunekit.runtimes.timing`, so
they are tested on a fake clock.
"""
from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable

import numpy as np

from prunekit.errors import PrunekitError
from prunekit.runtimes import LatencyStats, get_runtime
from prunekit.runtimes.base import time_runners
from prunekit.runtimes.onnxruntime_cpu import session
from prunekit.runtimes.timing import interleaved, summarize


def measure_onnx(path: str, input_size: tuple[int, int, int], batch: int = 1, threads: int = 1, warmup: int = 10,
                 runs: int = 100, runtime: str = "onnxruntime-cpu") -> LatencyStats:
    return get_runtime(runtime).measure({"m": path}, input_size, batch, threads, warmup, runs).stats["m"]


def measure_pair(paths: dict[str, str], input_size: tuple[int, int, int], batch: int, threads: int = 1,
                 warmup: int = 10, runs: int = 100, provider: str = "cpu",
                 clock: Callable[[], float] = time.perf_counter,
                 runtime: str = "onnxruntime-cpu") -> dict[str, LatencyStats]:
    """Several ONNX models in one process, interleaved (A B A B …) so machine drift hits all of them alike, on
    ``runtime`` (``provider`` cuda: onnxruntime's CUDA execution provider)."""
    if provider == "cuda":
        sessions = {k: session(p, threads, provider) for k, p in paths.items()}
        x = np.random.default_rng(0).standard_normal((batch, *input_size)).astype(np.float32)
        calls = {k: (lambda s=s: s.run(None, {s.get_inputs()[0].name: x})) for k, s in sessions.items()}
        return {k: summarize(v, batch) for k, v in interleaved(calls, warmup, runs, clock).items()}
    return get_runtime(runtime).measure(paths, input_size, batch, threads, warmup, runs, clock).stats


@contextlib.contextmanager
def deployables(runtimes, models: dict, input_size: tuple[int, ...], calibration: np.ndarray | None = None):
    """runtime name → {tag → what that runtime runs for each PyTorch model}: the module itself (PyTorch runtimes),
    else its ONNX export in a temporary folder (TorchScript exporter, fast), or for an int8 runtime the INT8 QDQ
    file, calibrated on ``calibration``, else on random inputs (calibration values do not change the time).
    Each model is exported (and quantized) once, whatever the number of runtimes."""
    rts = [get_runtime(r).require() for r in ([runtimes] if isinstance(runtimes, str) else runtimes)]
    import tempfile

    with tempfile.TemporaryDirectory(prefix="prunekit-speed-") as d:
        fp32, int8 = {}, {}
        if any(rt.artifact == "onnx" for rt in rts):
            import torch

            from prunekit.deploy.export import export_onnx

            for tag, model in models.items():
                fp32[tag] = os.path.join(d, f"{tag}.onnx")
                # a timing copy: parity on random inputs, loosely (real inputs are checked by prunekit export)
                export_onnx(model, torch.randn(2, *input_size), fp32[tag], exporter="torchscript", rtol=1e-3)
        if any(rt.quantized for rt in rts):
            from prunekit.deploy.quantize import int8_path, quantize_onnx

            calib = calibration if calibration is not None else np.random.default_rng(0).standard_normal(
                (32, *input_size)).astype(np.float32)
            for tag, path in fp32.items():
                int8[tag] = int8_path(path)
                quantize_onnx(path, int8[tag], calib, calib[:8])
        yield {rt.name: dict(models) if rt.artifact == "torch" else int8 if rt.quantized else fp32 for rt in rts}


def budgeted_runs(runners: dict, shape: tuple[int, ...], budget_s: float, least: int, most: int) -> int:
    """How many interleaved rounds fit ``budget_s``, from one probe round (at least ``least``, at most ``most``)."""
    probe = time_runners(runners, shape, 1, 1)
    per_round = sum(st.p50_ms for st in probe.stats.values()) / 1000
    return int(min(most, max(least, budget_s / max(per_round, 1e-6))))


def baseline_runtimes(runtime: str) -> list[str]:
    """The other dense deployments a pruned model is compared with: every ONNX runtime installed here (OpenVINO
    at its default precision, the one its users ship), besides ``runtime`` itself."""
    from prunekit.runtimes import available_runtimes

    return [r.name for r in available_runtimes("onnx", frontier=True) if r.name != runtime]


def compare_speed(dense, pruned, input_size: tuple[int, int, int], runtime: str = "onnxruntime-cpu",
                  batches: tuple[int, ...] = (1, 32), threads: int = 1, budget_s: float = 2.0,
                  calibration: np.ndarray | None = None, least: int = 3, most: int = 30,
                  baselines: bool = False) -> dict:
    """Dense vs pruned on the deployment runtime, interleaved, ``budget_s`` seconds per batch size: what
    ``prune`` reports at its end and measures its speedup targets with. The speedup is the ratio of the two
    models' fast tails (10th percentiles of interleaved calls), with its 90 % interval (``low``, ``high``): how
    far another measurement could land. With
    ``baselines``, the dense model also runs on every other ONNX runtime here, in the same loop, and each batch
    says which dense deployment was fastest and the pruned model's speedup over it."""
    from prunekit.deploy.frontier import fastest_dense, key

    rt = get_runtime(runtime)
    result = {"runtime": rt.name, "threads": threads, "batches": []}
    if rt.missing():
        if rt.artifact == "torch":  # a GPU runtime on a machine without one: time it where it ships
            return {**result, "skipped": f"{rt.missing()}: time it where it ships (prunekit bench)"}
        rt.require()
    others = baseline_runtimes(rt.name) if baselines and rt.artifact == "onnx" else []
    with deployables([rt.name, *others], {"dense": dense, "pruned": pruned}, input_size, calibration) as files:
        artifacts = {key(rt.name, tag): a for tag, a in files[rt.name].items()}
        artifacts.update({key(o, "dense"): files[o]["dense"] for o in others})
        for b in batches:
            shape = (b, *input_size)
            runners = {k: get_runtime(k.partition("|")[0]).load(a, threads, shape) for k, a in artifacts.items()}
            runs = budgeted_runs(runners, shape, budget_s, least, most)
            measured = time_runners(runners, shape, 2, runs)
            row = speed_row(b, measured, key(rt.name, "dense"), key(rt.name, "pruned"))
            if others:
                best = fastest_dense(measured)
                sp = measured.speedup(best, key(rt.name, "pruned"))
                row.update(fastest_dense={"runtime": best.partition("|")[0], "precision": measured.precision[best],
                                          "ms": measured.stats[best].p50_ms},
                           over_fastest_dense=sp.value, over_fastest_low=sp.low, over_fastest_high=sp.high,
                           dense_ms_by_runtime={k.partition("|")[0]: st.p50_ms for k, st in measured.stats.items()
                                                if k.endswith("|dense")})
            result["batches"].append(row)
            result["precision"] = measured.precision[key(rt.name, "pruned")]
    return result


def speed_row(batch: int, measured, reference: str = "dense", model: str = "pruned") -> dict:
    sp = measured.speedup(reference, model)
    return {"batch": batch, "dense_ms": measured.stats[reference].p50_ms, "pruned_ms": measured.stats[model].p50_ms,
            "speedup": sp.value, "speedup_low": sp.low, "speedup_high": sp.high,
            "runs": measured.stats[reference].runs}


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


def cuda_rows(models: dict, input_size, batch: int, warmup: int = 10, runs: int = 50) -> list[dict]:
    """Dense vs pruned in PyTorch eager on CUDA, in fp32 and bf16 autocast, contiguous and channels_last."""
    rows = []
    for dtype in ("fp32", "bf16"):
        for channels_last in (False, True):
            st = measure_torch_cuda(models, input_size, batch, dtype=dtype, channels_last=channels_last,
                                    warmup=warmup, runs=runs)
            rows.append({"dtype": dtype, "layout": "channels_last" if channels_last else "contiguous",
                         **{k: v for k, v in _cuda_row(st).items()}})
    return rows


def model_latency_ms(model, input_size: tuple[int, int, int], runtime: str = "onnxruntime-cpu", threads: int = 1,
                     batch: int = 1, runs: int = 50) -> float:
    """p50 latency (ms) of a PyTorch model on the deployment runtime (exported, and quantized for an int8 one,
    when the runtime runs ONNX files)."""
    with deployables(runtime, {"m": model}, input_size) as files:
        return get_runtime(runtime).measure(files[get_runtime(runtime).name], input_size, batch, threads, 10,
                                            runs).stats["m"].p50_ms


def _cuda_row(stats: dict[str, LatencyStats]) -> dict:
    return {"dense_ms": stats["dense"].p50_ms, "pruned_ms": stats["pruned"].p50_ms,
            "speedup": stats["dense"].p50_ms / stats["pruned"].p50_ms, "runs": stats["dense"].runs}


def measure_torch_cuda(models: dict, input_size: tuple[int, int, int], batch: int, *, dtype: str = "fp32",
                       channels_last: bool = False, warmup: int = 10, runs: int = 50,
                       device: str = "cuda") -> dict[str, LatencyStats]:
    """PyTorch eager latency on a CUDA device, models interleaved, each call timed with CUDA events after a
    synchronisation; ``dtype`` fp32, bf16 or fp16 (autocast); ``channels_last`` memory format."""
    import copy

    import torch

    if not torch.cuda.is_available():
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
