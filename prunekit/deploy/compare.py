"""What ``prunekit bench`` measures, as one function returning one record: an ONNX model (or a run folder's
pruned vs dense model, with their INT8 siblings) timed in onnxruntime, optionally in PyTorch eager on the CPU
or CUDA, with the speedups, MAC ratios and INT8 ratios derived from those timings. The CLI only renders it.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

from prunekit.deploy.artifacts import int8_siblings, run_onnx
from prunekit.errors import PrunekitError


@dataclass
class BenchResult:
    source: str
    vs: str | None  # the dense ONNX model compared with (a run folder's own, or --vs)
    threads: int
    provider: str
    warmup: int
    runs: int
    models: dict  # tag → path, input size, MACs, initializer elements, fast-path summary
    batches: list = field(default_factory=list)  # per batch: onnxruntime stats, speedup, int8, pytorch…

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


def bench(source: str, vs: str | None = None, batch_sizes: tuple[int, ...] = (1, 32), threads: int = 1,
          warmup: int = 10, runs: int = 100, provider: str = "cpu", device: str = "cpu", with_torch: bool = True,
          with_int8: bool = False, data: str | None = None, trust_code: bool = False) -> BenchResult:
    """Time SOURCE (and its dense model) at every batch size, interleaved in one process."""
    from prunekit.deploy.bench import cuda_rows, measure_pair, measure_torch_pair, onnx_info

    check_bench_options(source, runs, warmup, threads, provider, device)
    pruned_path, dense_path, torch_models = bench_sources(source, vs, trust_code)
    info = {"pruned": onnx_info(pruned_path)}
    paths = {"pruned": pruned_path}
    if dense_path:
        info["dense"] = onnx_info(dense_path)
        paths["dense"] = dense_path
        if info["dense"]["input_size"] != info["pruned"]["input_size"]:
            raise PrunekitError(f"the models take different inputs: {info['dense']['input_size']} vs "
                                f"{info['pruned']['input_size']}")
    if with_int8:
        if not dense_path:
            raise PrunekitError("--int8 compares dense and pruned: give --vs DENSE.onnx or a run folder")
        for k, p in int8_siblings(source, paths, data).items():
            paths[f"{k}-int8"] = p
            info[f"{k}-int8"] = onnx_info(p)
    if provider == "cpu":
        from prunekit.deploy.fastpath import fast_path

        for k, p in paths.items():
            info[k]["fast_path"] = fast_path(p).to_dict()
    size = info["pruned"]["input_size"]
    result = BenchResult(source, dense_path, threads, provider, warmup, runs,
                         {k: {"path": p, **info[k]} for k, p in paths.items()})
    for b in batch_sizes:
        ort_stats = measure_pair(paths, size, b, threads, warmup, runs, provider)
        row = {"batch": b, "onnxruntime": {k: v.to_dict() for k, v in ort_stats.items()}}
        if dense_path:
            speedup = ort_stats["dense"].p50_ms / ort_stats["pruned"].p50_ms
            mac_ratio = info["dense"]["macs"] / max(info["pruned"]["macs"], 1)
            row.update(speedup=speedup, mac_ratio=mac_ratio, speedup_efficiency=speedup / mac_ratio)
        if with_int8:
            d8, p8 = ort_stats["dense-int8"].p50_ms, ort_stats["pruned-int8"].p50_ms
            row["int8"] = {"dense_int8_vs_dense": ort_stats["dense"].p50_ms / d8,
                           "pruned_int8_vs_dense": ort_stats["dense"].p50_ms / p8,
                           "pruned_int8_vs_dense_int8": d8 / p8,
                           "efficiency_over_int8": d8 / p8 / row["mac_ratio"]}
        if torch_models and with_torch and device == "cpu":
            t_stats = measure_torch_pair(torch_models, size, b, threads, runs=max(5, runs // 3))
            row["pytorch"] = {k: v.to_dict() for k, v in t_stats.items()}
            row["pytorch_speedup"] = t_stats["dense"].p50_ms / t_stats["pruned"].p50_ms
        if torch_models and device == "cuda":
            row["pytorch_cuda"] = cuda_rows(torch_models, size, b, warmup, runs)
        result.batches.append(row)
    return result
