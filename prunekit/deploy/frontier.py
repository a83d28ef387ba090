"""The deployment frontier: dense and pruned models on every runtime × precision, timed in one interleaved loop,
and what pruning adds **on top of the fastest dense deployment measured** — the only gain a user can bank.

Each row is one (runtime, model) pair; a pruned row carries two speedups: over the same runtime's dense model,
and over the fastest dense row of the loop (named). :func:`frontier_rows` is a pure function of the timings, so
the choice of the fastest dense deployment is tested on faked ones. :func:`runner_accuracy` measures a loaded
model's top-1 accuracy on test images, through the runtime itself (an int8 or bf16 model is judged as it runs).
"""
from __future__ import annotations

import numpy as np

from prunekit.runtimes import Measured, get_runtime
from prunekit.runtimes.timing import paired_speedup

KEY = "{runtime}|{model}"


def key(runtime: str, model: str) -> str:
    return KEY.format(runtime=runtime, model=model)


def split(k: str) -> tuple[str, str]:
    runtime, _, model = k.partition("|")
    return runtime, model


def fastest_dense(measured: Measured) -> str | None:
    """The key of the dense row with the lowest median latency (None without a dense row)."""
    dense = [k for k in measured.stats if split(k)[1] == "dense"]
    return min(dense, key=lambda k: measured.stats[k].p50_ms) if dense else None


def frontier_rows(measured: Measured, accuracy: dict[str, float] | None = None) -> tuple[list[dict], dict | None]:
    """(rows, the fastest dense deployment) of one interleaved measurement whose keys are ``runtime|model``."""
    best = fastest_dense(measured)
    rows = []
    for k, st in measured.stats.items():
        runtime, model = split(k)
        row = {"runtime": runtime, "model": model, "precision": measured.precision.get(k), "p50_ms": st.p50_ms,
               "p90_ms": st.p90_ms, "runs": st.runs, "throughput_ips": st.throughput}
        same = key(runtime, "dense")
        if model == "pruned" and same in measured.stats:
            row["speedup"] = paired_speedup(measured.times[same], measured.times[k]).value
        if best is not None:
            sp = paired_speedup(measured.times[best], measured.times[k])
            row.update(over_fastest_dense=sp.value, over_fastest_low=sp.low, over_fastest_high=sp.high)
        if accuracy and k in accuracy:
            row["accuracy"] = accuracy[k]
        rows.append(row)
    fastest = None
    if best is not None:
        fastest = {"runtime": split(best)[0], "precision": measured.precision.get(best),
                   "p50_ms": measured.stats[best].p50_ms}
    return rows, fastest


def runner_accuracy(runtime: str, artifact, images: np.ndarray, labels: np.ndarray, threads: int = 1,
                    batch: int = 100) -> float:
    """Top-1 accuracy (%) of ``artifact`` run by ``runtime`` on normalised ``images`` (N, C, H, W), in batches of
    ``batch`` (a last partial batch runs on a runner of its own size)."""
    rt = get_runtime(runtime).require()
    n = len(images)
    correct, runners = 0, {}
    for start in range(0, n, batch):
        x = np.ascontiguousarray(images[start:start + batch], dtype=np.float32)
        if len(x) not in runners:
            runners[len(x)] = rt.load(artifact, threads, tuple(x.shape))
        out = runners[len(x)](x)
        logits = _first_output(out)
        correct += int((np.asarray(logits).argmax(1) == labels[start:start + len(x)]).sum())
    return 100.0 * correct / max(n, 1)


def _first_output(out):
    """The first output of a runtime call, as an array (onnxruntime: a list; OpenVINO: a dict; torch: a tensor)."""
    if hasattr(out, "detach"):  # a torch tensor
        return out.detach().float().numpy()
    if isinstance(out, (list, tuple)):
        return np.asarray(out[0])
    return np.asarray(next(iter(out.values())))
