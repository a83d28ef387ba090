"""Budget and baseline checks for CI (``prunekit check``): deterministic figures gated exactly or within a
tolerance, latency gated only as a ratio against a reference measured in the same run.

A check is a list of :class:`Verdict` rows (metric, budget, actual, passed); the CLI prints them as a
table, JSON or Markdown and exits 0 (all within budget), 1 (something over) or 2 (usage error).
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass

from prunekit.errors import PrunekitError
from prunekit.files import read_json

DETERMINISTIC = ("params", "int8_params", "macs", "bytes")


@dataclass
class Verdict:
    metric: str
    budget: str
    actual: float
    passed: bool
    detail: str = ""


def parse_tolerance(text: str | None) -> float:
    """``2%`` or ``0.02`` → 0.02."""
    if text is None or text == "":
        return 0.0
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise PrunekitError(f"--tolerance must look like 2% or 0.02, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise PrunekitError(f"--tolerance must be a finite number ≥ 0, got {text!r}")
    return value


def figures(path: str) -> dict:
    """Deterministic figures of an ONNX file: params (initializer elements; int8_params: those stored as
    8-bit integers, for quantized models), MACs, file bytes."""
    from prunekit.deploy.speed import onnx_info

    if not os.path.isfile(path):
        raise PrunekitError(f"no such ONNX file: {path}")
    info = onnx_info(path)
    return {"params": info["params"], "int8_params": info["int8_params"], "macs": info["macs"],
            "bytes": os.path.getsize(path), "input_size": list(info["input_size"])}


def read_baseline(path: str) -> dict:
    data = read_json(path, "baseline")  # refuses NaN / Infinity
    if not isinstance(data, dict) or not any(k in data for k in DETERMINISTIC):
        raise PrunekitError(f"baseline {path} has none of {', '.join(DETERMINISTIC)}")
    for k in DETERMINISTIC:
        if k in data and (not isinstance(data[k], (int, float)) or isinstance(data[k], bool) or data[k] < 0):
            raise PrunekitError(f"baseline {path}: {k} must be a number ≥ 0, got {data[k]!r}")
    return data


def check_figures(actual: dict, budgets: dict[str, float | None], baseline: dict | None,
                  tolerance: float) -> list[Verdict]:
    rows = []
    for metric in DETERMINISTIC:
        limit = budgets.get(metric)
        if limit is not None:
            rows.append(Verdict(metric, f"≤ {limit:,.0f}", actual[metric], actual[metric] <= limit))
        if baseline is not None and metric in baseline:
            ref = float(baseline[metric])
            allowed = ref * (1 + tolerance)
            rows.append(Verdict(metric, f"baseline {ref:,.0f} +{tolerance:.1%}", actual[metric],
                                actual[metric] <= allowed, f"{(actual[metric] / ref - 1) if ref else 0:+.2%}"))
    return rows


def reference_runtimes(reference: str, runtime: str, against: str) -> dict[str, str]:
    """runtime → the reference file it runs: ``same`` the ``--vs`` file on ``runtime``; ``fastest`` the ``--vs``
    file on every ONNX runtime installed here (int8 runtimes on ``NAME.int8.onnx`` beside it, when there is one)."""
    from prunekit.deploy.quantize import int8_path
    from prunekit.runtimes import available_runtimes, get_runtime

    if against == "same":
        return {get_runtime(runtime).require().name: reference}
    out = {}
    for rt in available_runtimes("onnx", frontier=True):
        path = int8_path(reference) if rt.quantized else reference
        if os.path.isfile(path):
            out[rt.name] = path
    return out


def check_speedup(path: str, reference: str, min_speedup: float, runs: int, threads: int,
                  runtime: str = "onnxruntime-cpu", against: str = "same", batch: int = 1) -> Verdict:
    """MODEL on ``runtime`` vs the reference (``--vs``) on the same runtime, or on whichever runtime runs it
    fastest (``against="fastest"``): the ratio of the fast tails (10th percentiles) of interleaved calls, with
    its 90 % interval."""
    from prunekit.deploy.speed import onnx_info
    from prunekit.deploy.frontier import key, split
    from prunekit.runtimes import get_runtime
    from prunekit.runtimes.base import time_runners

    if against not in ("same", "fastest"):
        raise PrunekitError(f"--against must be same or fastest, got {against!r}")
    size = onnx_info(path)["input_size"]
    shape = (batch, *size)
    rt = get_runtime(runtime).require()
    artifacts = {key(r, "reference"): p for r, p in reference_runtimes(reference, runtime, against).items()}
    artifacts[key(rt.name, "model")] = path
    runners = {k: get_runtime(split(k)[0]).load(a, threads, shape) for k, a in artifacts.items()}
    measured = time_runners(runners, shape, 10, runs)
    refs = [k for k in measured.stats if split(k)[1] == "reference"]
    best = min(refs, key=lambda k: measured.stats[k].p50_ms)
    sp = measured.speedup(best, key(rt.name, "model"))
    where = rt.name if against == "same" else f"{rt.name}, vs the fastest of {len(refs)} runtimes: {split(best)[0]}"
    return Verdict(f"speedup (batch {batch}, p50)", f"≥ {min_speedup:g}×", sp.value, sp.value >= min_speedup,
                   f"{measured.stats[key(rt.name, 'model')].p50_ms:.3f} ms vs {measured.stats[best].p50_ms:.3f} ms "
                   f"on {where}; 90 % interval {sp.low:.2f}–{sp.high:.2f}×, {runs} runs interleaved")


def check_fast_path(path: str, reference: str | None = None) -> Verdict:
    """Every Conv on onnxruntime's NCHWc path (or, with a reference model, no more off it than there)."""
    from prunekit.deploy.fastpath import fast_path

    fp = fast_path(path)
    if not fp.supported:
        return Verdict("convs off the fast path", "not applicable", 0, True, fp.summary())
    allowed = len(fast_path(reference).off_path) if reference else 0
    budget = f"≤ {allowed} (as {os.path.basename(reference)})" if reference else "0"
    return Verdict("convs off the fast path", budget, len(fp.off_path), len(fp.off_path) <= allowed, fp.summary())


def check_latency(path: str, max_ms: float, runs: int, threads: int) -> Verdict:
    from prunekit.deploy.speed import measure_onnx, onnx_info

    st = measure_onnx(path, onnx_info(path)["input_size"], 1, threads, 10, runs)
    return Verdict("latency (batch 1, p50, ms)", f"≤ {max_ms:g}", st.p50_ms, st.p50_ms <= max_ms,
                   f"absolute time on this machine, {runs} runs (noisy on shared CI: prefer --vs/--min-speedup)")


def _fmt(x: float) -> str:
    return f"{x:,.3f}" if isinstance(x, float) and not x.is_integer() else f"{x:,.0f}"


def table(rows: list[Verdict]) -> str:
    lines = [f"{'metric':<28} {'budget / baseline':<30} {'actual':>16}  verdict"]
    for r in rows:
        lines.append(f"{r.metric:<28} {r.budget:<30} {_fmt(r.actual):>16}  {'ok' if r.passed else 'OVER'}"
                     + (f"  ({r.detail})" if r.detail else ""))
    return "\n".join(lines)


def markdown(path: str, rows: list[Verdict]) -> str:
    ok = all(r.passed for r in rows)
    out = [f"### prunekit check: {'✅ within budget' if ok else '❌ over budget'} — `{os.path.basename(path)}`", "",
           "| metric | budget / baseline | actual | verdict |", "| --- | --- | ---: | --- |"]
    for r in rows:
        out.append(f"| {r.metric} | {r.budget} | {_fmt(r.actual)} | {'ok' if r.passed else '**over**'} |")
    return "\n".join(out) + "\n"


def to_json(path: str, rows: list[Verdict], actual: dict) -> dict:
    return {"model": path, "passed": all(r.passed for r in rows), "figures": actual,
            "checks": [asdict(r) for r in rows]}


@dataclass
class Budgets:
    params: float | None = None  # ONNX initializer elements
    macs: float | None = None  # MACs at batch 1
    bytes: float | None = None  # file size
    latency_ms: float | None = None  # absolute p50 at batch 1


def run_checks(model: str, budgets: Budgets, baseline: str | None = None, tolerance: str | None = "0%",
               vs: str | None = None, min_speedup: float | None = None, require_fast_path: bool = False,
               runs: int = 100, threads: int = 1, runtime: str = "onnxruntime-cpu",
               against: str = "same") -> tuple[list[Verdict], dict]:
    """Every check ``prunekit check`` was asked for, in order: (verdicts, the model's figures)."""
    from prunekit.files import require_finite

    tol = parse_tolerance(tolerance)
    for name, value in (("--max-params", budgets.params), ("--max-macs", budgets.macs),
                        ("--max-bytes", budgets.bytes), ("--max-latency-ms", budgets.latency_ms),
                        ("--min-speedup", min_speedup)):
        if value is not None and require_finite(name, value) < 0:
            raise PrunekitError(f"{name} must not be negative, got {value}")
    if vs is not None and min_speedup is None and not require_fast_path:
        raise PrunekitError("--vs needs --min-speedup or --require-fast-path")
    if min_speedup is not None and vs is None:
        raise PrunekitError("--min-speedup needs --vs (the model to be faster than)")
    if runs <= 0 or threads <= 0:
        raise PrunekitError("--runs and --threads must be positive")
    actual = figures(model)
    ref = read_baseline(baseline) if baseline else None
    if vs and not os.path.isfile(vs):
        raise PrunekitError(f"no such ONNX file: {vs}")
    rows = check_figures(actual, {"params": budgets.params, "macs": budgets.macs, "bytes": budgets.bytes}, ref, tol)
    if budgets.latency_ms is not None:
        rows.append(check_latency(model, budgets.latency_ms, runs, threads))
    if require_fast_path:
        rows.append(check_fast_path(model, vs))
    if vs and min_speedup is not None:
        rows.append(check_speedup(model, vs, min_speedup, runs, threads, runtime, against))
    if not rows:
        raise PrunekitError("nothing to check: give a budget (--max-…), --baseline, --require-fast-path, "
                            "or --vs with --min-speedup")
    return rows, actual
