"""Torch-Pruning's own pruner as the peer: one-shot global group-magnitude pruning sized by measured speedup.

The peer is ``torch_pruning`` 's ``MetaPruner`` with ``GroupMagnitudeImportance(p=2)``, global ranking,
``round_to`` and the classifier left alone, pruned in one step. Its global ``pruning_ratio`` is bisected until
the MEASURED speedup (dense p50 / pruned p50 latency from :func:`prunekit.deploy.speed.model_latency_ms` at the given
batch, runtime and thread count) reaches the target; params and MACs come from
:func:`prunekit.core.metrics.count_model`.

The ratio -> size map is not monotone: torch-pruning rounds each group's kept channels DOWN to ``round_to`` and
skips any group it would empty, so past some ratio more pruning removes less (ResNet-56 with round_to=16 removes
the most MACs near 0.45 and is dense again at 0.95). The bisection's upper end is therefore the grid ratio
(step 0.05, up to ``max_ratio``) with the fewest MACs, found by pruning and counting only (no timing).

prunekit's custom pruners (e.g. the option-A shortcut of the CIFAR ResNets) are handed to torch-pruning, so the
peer prunes the same exact dependency graph prunekit sees.

    from tp_peer import tp_prune_to_speedup
    pruned, info = tp_prune_to_speedup(model, (3, 32, 32), 1.5, round_to=16, batch=32)
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch_pruning as tp

from prunekit.models.extensions import PRUNERS  # the built-in models' custom pruners, registered on import
from prunekit.deploy.speed import model_latency_ms
from prunekit.core.metrics import count_model
from prunekit.models import find_classifier


def _classifier(model: nn.Module) -> list[nn.Module]:
    name = find_classifier(model)
    return [dict(model.named_modules())[name]] if name else []


def tp_prune_to_ratio(model: nn.Module, input_size: tuple[int, int, int], ratio: float,
                      round_to: int | None) -> nn.Module:
    """A pruned deep copy of ``model``: torch-pruning one-shot, global L2 group magnitude at ``ratio``."""
    pruned = copy.deepcopy(model).eval()
    device = next(pruned.parameters()).device
    example = torch.randn(1, *input_size, device=device)
    with torch.no_grad():
        dense_shape = tuple(pruned(example).shape)
    if ratio <= 0:
        return pruned
    with torch.enable_grad():  # the dependency graph is traced through autograd
        pruner = tp.pruner.MetaPruner(
            pruned, example, importance=tp.importance.GroupMagnitudeImportance(p=2), pruning_ratio=ratio,
            global_pruning=True, iterative_steps=1, round_to=round_to or None,
            ignored_layers=_classifier(pruned), customized_pruners=dict(PRUNERS))
        pruner.step()
    pruned.eval()
    with torch.no_grad():
        shape = tuple(pruned(example).shape)
    if shape != dense_shape:
        raise RuntimeError(f"torch-pruning at ratio {ratio:.3f} changed the output shape {dense_shape} -> {shape}")
    return pruned


def _signature(model: nn.Module) -> tuple:
    """The pruned architecture: the width of every conv / linear (equal signatures time the same)."""
    return tuple((m.in_channels, m.out_channels) if isinstance(m, nn.Conv2d) else (m.in_features, m.out_features)
                 for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


def _fewest_macs_ratio(model: nn.Module, input_size: tuple[int, int, int], round_to: int | None,
                       max_ratio: float, step: float = 0.05) -> float:
    grid = [round(step * k, 4) for k in range(1, int(max_ratio / step + 1e-9) + 1)]
    macs = {r: count_model(tp_prune_to_ratio(model, input_size, r, round_to), input_size).macs for r in grid}
    return min(grid, key=lambda r: (macs[r], r))


def tp_prune_to_speedup(model: nn.Module, input_size: tuple[int, int, int], speedup: float, round_to: int | None,
                        batch: int = 32, threads: int = 1, runtime: str = "onnxruntime-cpu", max_iters: int = 8,
                        log=print, runs: int = 20, max_ratio: float = 0.95) -> tuple[nn.Module, dict]:
    """Bisect the global pruning ratio in [0, the fewest-MACs ratio ≤ ``max_ratio``] for the smallest one whose
    measured speedup at ``batch`` is ≥ ``speedup``; at most ``max_iters`` pruned-model measurements (an
    architecture already timed is not timed again). Returns ``(pruned model, info)``; ``info["reached"]`` is
    False (and the model the fastest one tried) when no ratio reached the target."""
    def latency(m: nn.Module) -> float:
        return model_latency_ms(m, input_size, runtime, threads, batch=batch, runs=runs)

    dense_ms = latency(model)
    log(f"tp-peer: dense {dense_ms:.2f} ms (batch {batch}, {runtime}, {threads} thread(s)); target {speedup:.2f}x")
    timed: dict[tuple, float] = {}
    tries: list[dict] = []
    best = fastest = None  # (ratio, model, ms)
    lo, hi = 0.0, _fewest_macs_ratio(model, input_size, round_to, max_ratio)
    top = hi
    log(f"tp-peer: fewest MACs at ratio {top} (round_to={round_to}); bisecting in [0, {top}]")
    while len(timed) < max_iters and hi - lo > 1e-3:
        ratio = round((lo + hi) / 2, 4)
        pruned = tp_prune_to_ratio(model, input_size, ratio, round_to)
        sig = _signature(pruned)
        cached = sig in timed
        ms = timed[sig] if cached else timed.setdefault(sig, latency(pruned))
        tries.append({"ratio": ratio, "speedup": round(dense_ms / ms, 4), "pruned_ms": round(ms, 3),
                      "cached": cached})
        log(f"tp-peer: ratio {ratio:.4f} -> {ms:.2f} ms, speedup {dense_ms / ms:.3f}x" + (" (same arch)" * cached))
        if fastest is None or ms < fastest[2]:
            fastest = (ratio, pruned, ms)
        if dense_ms / ms >= speedup:
            hi = ratio
            if best is None or ratio < best[0]:
                best = (ratio, pruned, ms)
        else:
            lo = ratio
    reached = best is not None
    ratio, pruned, ms = best if reached else fastest
    count = count_model(pruned, input_size)
    info = {"ratio": ratio, "measured_speedup": dense_ms / ms, "dense_ms": dense_ms, "pruned_ms": ms,
            "params": count.params, "macs": count.macs, "reached": reached, "target_speedup": speedup,
            "bisect_max_ratio": top, "round_to": round_to, "batch": batch, "threads": threads, "runtime": runtime,
            "tries": tries}
    if not reached:
        log(f"tp-peer: no ratio up to {top} reached {speedup:.2f}x; returning the fastest (ratio {ratio})")
    return pruned, info
