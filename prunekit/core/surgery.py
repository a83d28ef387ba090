"""Masks → physically smaller model, through torch-pruning's dependency graph, and the proof that it matches.

:func:`apply_plan` removes the planned channels group by group: the group is built just in time from the
current graph (``get_pruning_group``), with all of one group's indices in one call, after checking them
ourselves (torch-pruning's group path does not validate indices). torch-pruning records each call in its
pruning history, which :func:`replay` applies to a freshly built dense model: that is how a run folder is
loaded without unpickling any module.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn

from prunekit.errors import PrunekitError, VerificationError
from prunekit.core.graph import ChannelGroup, build_graph
from prunekit.core.costmodel import Plan
from prunekit.core.masking import masked


def _validate(plan: Plan, groups: dict[str, ChannelGroup]) -> None:
    for root, idxs in plan.items():
        g = groups.get(root)
        if g is None:
            raise PrunekitError(f"plan names {root}, which is not a group root")
        if not g.prunable:
            raise PrunekitError(f"group {root} is frozen: {g.reason}")
        if len(set(idxs)) != len(idxs):
            raise PrunekitError(f"duplicate channel indices for {root}")
        if any(i < 0 or i >= g.channels for i in idxs):
            raise PrunekitError(f"channel index out of range for {root} ({g.channels} channels)")
        if len(idxs) >= g.channels:
            raise PrunekitError(f"plan removes all {g.channels} channels of {root}")


def apply_plan(model: nn.Module, groups: list[ChannelGroup], plan: Plan,
               input_size: tuple[int, int, int]) -> tuple[nn.Module, list]:
    """Return ``(pruned copy of model, torch-pruning history)``; ``model`` itself is not changed."""
    by_root = {g.root: g for g in groups}
    _validate(plan, by_root)
    pruned = copy.deepcopy(model)
    dg = build_graph(pruned, input_size)
    named = dict(pruned.named_modules())
    for root, idxs in plan.items():
        if not idxs:
            continue
        module = named[root]
        pruner = dg.get_pruner_of_module(module)
        try:
            group = dg.get_pruning_group(module, pruner.prune_out_channels, sorted(idxs))
            group.prune()
        except Exception as e:
            raise PrunekitError(f"torch-pruning failed to remove channels of {root}: {type(e).__name__}: {e}") from e
    return pruned.eval(), [[name, bool(is_out), [int(i) for i in idxs]] for name, is_out, idxs in dg.pruning_history()]


def replay(model: nn.Module, history: list, input_size: tuple[int, int, int]) -> nn.Module:
    """Apply a recorded pruning history to a freshly built dense ``model`` (in place) and return it."""
    if not history:
        return model
    dg = build_graph(model, input_size)
    try:
        dg.load_pruning_history([(name, bool(is_out), list(idxs)) for name, is_out, idxs in history])
    except Exception as e:
        raise PrunekitError(f"cannot replay the pruning history on this architecture: {type(e).__name__}: {e}") from e
    return model


def compare_outputs(reference: torch.Tensor, other: torch.Tensor, atol: float,
                    rtol: float) -> tuple[float, float, bool]:
    """(max abs diff, allowed diff, passed): allowed = atol + rtol · max|reference| (numpy's allclose rule,
    on the whole output). Trained classifiers have logits of order 10, so the rtol term is small there; it
    matters for randomly initialised deep nets whose outputs reach 1e4."""
    reference, other = reference.detach().double(), other.detach().double()
    if reference.shape != other.shape:
        return float("inf"), atol, False
    diff = float((reference - other).abs().max()) if reference.numel() else 0.0
    allowed = atol + rtol * float(reference.abs().max()) if reference.numel() else atol
    return diff, allowed, bool(diff <= allowed)  # NaN fails


def verify_masked_equals_pruned(dense: nn.Module, pruned: nn.Module, groups: list[ChannelGroup], plan: Plan,
                                inputs: torch.Tensor, atol: float = 1e-4, rtol: float = 1e-5) -> dict:
    """Masked dense model vs physically pruned model on ``inputs``; raises PrunekitError beyond tolerance."""
    dense.eval()
    pruned.eval()
    with torch.no_grad(), masked(dense, groups, plan):
        diff, allowed, ok = compare_outputs(dense(inputs), pruned(inputs), atol, rtol)
    result = {"check": "masked == pruned", "max_abs_diff": diff, "allowed": allowed, "atol": atol, "rtol": rtol,
              "inputs": int(inputs.shape[0]), "passed": ok}
    if not ok:
        raise VerificationError(
            f"verification failed: the masked model and the pruned model differ by {diff:.3g} (> {allowed:.3g}) "
            f"on {inputs.shape[0]} inputs; pruned groups: {', '.join(list(plan)[:8])}")
    return result
