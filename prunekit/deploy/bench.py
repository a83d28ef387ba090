"""What ``prunekit bench`` measures, as one function returning one record: an ONNX model (or a run folder's
pruned vs dense model, with their INT8 siblings) on every runtime × precision this machine has (onnxruntime fp32
and int8, OpenVINO default and int8 when installed; PyTorch eager on request), all timed in one interleaved
loop, with test accuracy through each runtime when labelled data is given. Each pruned row gets two speedups:
over the same runtime's dense model and over the fastest dense deployment measured (:mod:`.frontier`). MAC
ratios and the INT8 ratios of onnxruntime come with it; CUDA rows on request. The CLI only renders it.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

import numpy as np

from prunekit.deploy.artifacts import int8_siblings, run_onnx
from prunekit.deploy.frontier import frontier_rows, key, runner_accuracy, split
from prunekit.deploy.quantize import int8_path
from prunekit.errors import PrunekitError
from prunekit.runtimes import get_runtime
from prunekit.runtimes.base import time_runners


@dataclass
class BenchResult:
    source: str
    vs: str | None  # the dense ONNX model compared with (a run folder's own, or --vs)
    threads: int
    provider: str
    warmup: int
    runs: int
    models: dict  # tag → path, input size, MACs, initializer elements, fast-path summary
    runtimes: list = field(default_factory=list)  # the runtimes timed, in order
    skipped: dict = field(default_factory=dict)  # runtime → why it was not timed
    batches: list = field(default_factory=list)  # per batch: the frontier, onnxruntime stats, speedup, int8, …

    def to_dict(self) -> dict:
        return asdict(self)


def speedup_words(speedup: float) -> str:
    """``1.42×``, or ``0.94× — SLOWER than dense`` below 1: a number alone hides that the pruning lost time."""
    return f"{speedup:.2f}×" if speedup >= 1 else f"{speedup:.2f}× — SLOWER than dense"


def bench_sources(source: str, vs: str | None, trust_code: bool = False):
    """(pruned onnx, dense onnx or None, torch models or None) for an ONNX file or a run folder."""
    if os.path.isdir(source):
        from prunekit.runs.rebuild import load, load_dense

        models = {"pruned": load(source, trust_code=trust_code), "dense": load_dense(source, trust_code=trust_code)}
        paths = {tag: run_onnx(source, tag, model=m) for tag, m in models.items()}
        return paths["pruned"], vs or paths["dense"], models
    if not os.path.isfile(source):
        raise PrunekitError(f"no such ONNX file or run folder: {source}")
    if vs and not os.path.isfile(vs):
        raise PrunekitError(f"no such ONNX file: {vs}")
    return source, vs, None


def check_bench_options(source: str, runs: int, warmup: int, threads: int, provider: str, device: str) -> None:
    if runs <= 0 or warmup < 0 or threads <= 0:
        raise PrunekitError("--runs and --threads must be positive and --warmup ≥ 0")
    if provider == "cuda":
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise PrunekitError("the CUDA execution provider is not available: install onnxruntime-gpu and run "
                                "on a machine with an NVIDIA GPU, or use --provider cpu")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise PrunekitError("--device cuda: no CUDA GPU is available to PyTorch on this machine")
        if not os.path.isdir(source):
            raise PrunekitError("--device cuda times PyTorch models: give a run folder (or use --provider cuda "
                                "for onnxruntime on ONNX files)")


def choose_runtimes(requested: tuple[str, ...] | None, with_int8: bool, with_torch: bool, have_torch: bool,
                    int8_ok: bool) -> tuple[list[str], dict[str, str]]:
    """(runtimes to time, runtime → why skipped): ``requested`` as given (every one must be usable), else every
    ONNX runtime this machine has — int8 ones when INT8 files exist or can be made (``--int8`` insists on them) —
    and PyTorch eager with ``with_torch``."""
    from prunekit.runtimes import available_runtimes, get_runtime

    if requested:
        chosen = [get_runtime(r).require().name for r in requested]
        for name in chosen:
            rt = get_runtime(name)
            if rt.quantized and not int8_ok:
                raise PrunekitError(f"--runtimes {name} times INT8 files: none beside the model (prunekit quantize "
                                    "NAME.onnx --out NAME.int8.onnx --data …, or bench a run folder)")
            if rt.artifact == "torch" and not have_torch:
                raise PrunekitError(f"--runtimes {name} times PyTorch models: give a run folder")
        return chosen, {}
    chosen, skipped = [], {}
    for rt in available_runtimes("onnx", frontier=True):
        if rt.quantized and not int8_ok:
            skipped[rt.name] = "no INT8 files beside the models (prunekit quantize, or bench a run folder)"
            continue
        chosen.append(rt.name)
    if with_int8 and not int8_ok:
        raise PrunekitError("--int8: no INT8 model beside the ONNX files: run prunekit quantize first")
    if with_torch and have_torch:
        chosen.append("torch-cpu")
    return chosen, skipped


def bench(source: str, vs: str | None = None, batch_sizes: tuple[int, ...] = (1, 32), threads: int = 1,
          warmup: int = 10, runs: int = 100, provider: str = "cpu", device: str = "cpu", with_torch: bool = False,
          with_int8: bool = False, data: str | None = None, trust_code: bool = False,
          runtimes: tuple[str, ...] | None = None, eval_images: int | None = 0) -> BenchResult:
    """Time SOURCE (and its dense model) at every batch size on every chosen runtime, interleaved in one process;
    with labelled ``data`` and ``eval_images`` ≠ 0, the test accuracy of each (runtime, model) as well."""
    from prunekit.deploy.speed import cuda_rows, measure_pair, onnx_info

    check_bench_options(source, runs, warmup, threads, provider, device)
    for name in runtimes or ():  # a runtime asked for and not installed: one error, before any work
        get_runtime(name).require()
    pruned_path, dense_path, torch_models = bench_sources(source, vs, trust_code)
    info = {"pruned": onnx_info(pruned_path)}
    paths = {"pruned": pruned_path}
    if dense_path:
        info["dense"] = onnx_info(dense_path)
        paths["dense"] = dense_path
        if info["dense"]["input_size"] != info["pruned"]["input_size"]:
            raise PrunekitError(f"the models take different inputs: {info['dense']['input_size']} vs "
                                f"{info['pruned']['input_size']}")
    int8_ok = bool(dense_path) and (os.path.isdir(source) or all(os.path.isfile(int8_path(p))
                                                                  for p in paths.values()))
    if with_int8 and not dense_path:
        raise PrunekitError("--int8 compares dense and pruned: give --vs DENSE.onnx or a run folder")
    chosen, skipped = (["onnxruntime-cpu"] + (["onnxruntime-cpu-int8"] if with_int8 else []), {}) \
        if provider == "cuda" else choose_runtimes(runtimes, with_int8, with_torch, torch_models is not None, int8_ok)
    if any(get_runtime(r).quantized for r in chosen):
        for k, p in int8_siblings(source, paths, data).items():
            paths[f"{k}-int8"] = p
            info[f"{k}-int8"] = onnx_info(p)
    if provider == "cpu":
        from prunekit.deploy.fastpath import fast_path

        for k, p in paths.items():
            info[k]["fast_path"] = fast_path(p).to_dict()
    size = info["pruned"]["input_size"]
    result = BenchResult(source, dense_path, threads, provider, warmup, runs,
                         {k: {"path": p, **info[k]} for k, p in paths.items()}, chosen, skipped)
    artifacts = _artifacts(chosen, paths, torch_models)
    accuracy = _accuracies(artifacts, data, size, eval_images, threads) if provider == "cpu" else {}
    for b in batch_sizes:
        if provider == "cuda":
            stats = measure_pair(paths, size, b, threads, warmup, runs, provider)
            row = {"batch": b, "onnxruntime": {k: v.to_dict() for k, v in stats.items()}}
        else:
            shape = (b, *size)
            runners = {k: get_runtime(split(k)[0]).load(a, threads, shape) for k, a in artifacts.items()}
            measured = time_runners(runners, shape, warmup, runs)
            rows, fastest = frontier_rows(measured, accuracy)
            stats = _by_tag(measured, "onnxruntime")
            row = {"batch": b, "frontier": rows, "fastest_dense": fastest,
                   "onnxruntime": {k: v.to_dict() for k, v in stats.items()}, **_pytorch(measured)}
        if dense_path and "dense" in stats and "pruned" in stats:
            speedup = stats["dense"].p50_ms / stats["pruned"].p50_ms
            mac_ratio = info["dense"]["macs"] / max(info["pruned"]["macs"], 1)
            row.update(speedup=speedup, mac_ratio=mac_ratio, speedup_efficiency=speedup / mac_ratio)
        if "dense-int8" in stats and "pruned-int8" in stats and "dense" in stats:
            d8, p8 = stats["dense-int8"].p50_ms, stats["pruned-int8"].p50_ms
            row["int8"] = {"dense_int8_vs_dense": stats["dense"].p50_ms / d8,
                           "pruned_int8_vs_dense": stats["dense"].p50_ms / p8,
                           "pruned_int8_vs_dense_int8": d8 / p8,
                           "efficiency_over_int8": d8 / p8 / row["mac_ratio"]}
        if torch_models and device == "cuda":
            row["pytorch_cuda"] = cuda_rows(torch_models, size, b, warmup, runs)
        result.batches.append(row)
    return result


def _artifacts(chosen: list[str], paths: dict[str, str], torch_models: dict | None) -> dict:
    """``runtime|model`` → what that runtime runs for that model (fp32 file, INT8 file or PyTorch module)."""
    out = {}
    for name in chosen:
        rt = get_runtime(name)
        for model in ("dense", "pruned"):
            tag = f"{model}-int8" if rt.quantized else model
            if rt.artifact == "torch":
                if torch_models and model in torch_models:
                    out[key(name, model)] = torch_models[model]
            elif tag in paths:
                out[key(name, model)] = paths[tag]
    return out


def _by_tag(measured, family: str) -> dict:
    """One runtime family's statistics by model tag (``dense``, ``pruned``, ``dense-int8``, …)."""
    out = {}
    for k, st in measured.stats.items():
        runtime, model = split(k)
        rt = get_runtime(runtime)
        if rt.family == family and rt.precision in ("fp32", "int8"):
            out[f"{model}-int8" if rt.quantized else model] = st
    return out


def _pytorch(measured) -> dict:
    """PyTorch eager rows as bench always gave them (``pytorch``, ``pytorch_speedup``), when timed."""
    stats = _by_tag(measured, "torch")
    if not stats:
        return {}
    out = {"pytorch": {k: v.to_dict() for k, v in stats.items()}}
    if {"dense", "pruned"} <= set(stats):
        out["pytorch_speedup"] = stats["dense"].p50_ms / stats["pruned"].p50_ms
    return out


def _accuracies(artifacts: dict, data: str | None, input_size, eval_images: int | None, threads: int) -> dict:
    """Test accuracy of every (runtime, model) through the runtime itself, when ``data`` has labelled tests."""
    if not data or data == "random" or eval_images == 0:
        return {}
    from prunekit.data import load_data
    from prunekit.data.inputs import spread
    from prunekit.progress import info

    bundle = load_data(data, tuple(input_size))
    if not bundle.has_labels or bundle.test is None:
        return {}
    ds = bundle.test if eval_images is None else bundle.test.subset(spread(len(bundle.test), eval_images))
    images, labels = bundle.tensor(ds).numpy(), np.asarray(ds.labels)
    out = {}
    for k, artifact in artifacts.items():
        info(f"test accuracy of {k.replace('|', ' ')} on {len(images)} images")
        out[k] = runner_accuracy(split(k)[0], artifact, images, labels, threads)
    return out
