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

from prunekit.errors import BrokenCut, PrunekitError, VerificationError
from prunekit.outputs import compare_outputs
from prunekit.core.branches import drop_branches
from prunekit.core.graph import ChannelGroup
from prunekit.core.trace import build_graph, sync_split_owners
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
        if len(idxs) >= g.channels and not g.branch:
            raise PrunekitError(f"plan removes all {g.channels} channels of {root}")


def dropped_by(plan: Plan, groups: dict[str, ChannelGroup]) -> list[str]:
    """The blocks whose residual branch ``plan`` drops (every channel of the group that opens it removed)."""
    return [groups[r].branch for r, idxs in plan.items() if groups[r].branch and len(idxs) >= groups[r].channels]


def apply_plan(model: nn.Module, groups: list[ChannelGroup], plan: Plan,
               input_size: tuple[int, int, int]) -> tuple[nn.Module, list]:
    """Return ``(pruned copy of model, torch-pruning history)``; ``model`` itself is not changed. A group whose
    every channel goes drops its residual branch (:mod:`prunekit.core.branches`) once torch-pruning has removed
    the rest: the pruned model knows its dropped blocks (``dropped_blocks``), the history holds the rest."""
    by_root = {g.root: g for g in groups}
    _validate(plan, by_root)
    drop = dropped_by(plan, by_root)
    pruned = copy.deepcopy(model)
    dg = build_graph(pruned, input_size)
    named = dict(pruned.named_modules())
    for root, idxs in plan.items():
        if not idxs or by_root[root].branch in drop:
            continue
        module = named[root]
        pruner = dg.get_pruner_of_module(module)
        try:
            group = dg.get_pruning_group(module, pruner.prune_out_channels, sorted(idxs))
            group.prune()
        except Exception as e:
            raise PrunekitError(f"torch-pruning failed to remove channels of {root}: {type(e).__name__}: {e}") from e
    history = [[name, bool(is_out), [int(i) for i in idxs]] for name, is_out, idxs in dg.pruning_history()]
    sync_split_owners(pruned)
    drop_branches(pruned, drop)
    return pruned.eval(), history


def replay(model: nn.Module, history: list, input_size: tuple[int, int, int],
           dropped: list[str] | None = None) -> nn.Module:
    """Apply a recorded pruning history to a freshly built dense ``model`` (in place), then drop the ``dropped``
    blocks' branches, and return it."""
    if history:
        dg = build_graph(model, input_size)
        try:
            dg.load_pruning_history([(name, bool(is_out), list(idxs)) for name, is_out, idxs in history])
        except Exception as e:
            raise PrunekitError(f"cannot replay the pruning history on this architecture: {type(e).__name__}: "
                                f"{e}") from e
        sync_split_owners(model)
    drop_branches(model, dropped or [])
    return model


def _float64_check(dense, pruned, groups, plan, inputs) -> tuple[float, float, bool]:
    """The masked == pruned comparison in float64 (copies; the models are untouched): agreement to 1e-9
    relative means the surgery is exact and a float32 difference is rounding."""
    d, p, x = copy.deepcopy(dense).double(), copy.deepcopy(pruned).double(), inputs.double()
    with torch.no_grad(), masked(d, groups, plan):
        return compare_outputs(d(x), p(x), 1e-9, 1e-9)


INEXACT = ("removing its channels alone makes the masked and the pruned model differ in float64: a channel coupling "
           "torch-pruning did not record (e.g. a Ghost module's concat of a tensor and its depthwise copy)")
BREAKS = ("removing its channels alone leaves a model that does not run: a channel coupling torch-pruning did not "
          "record (e.g. a layer it empties or resizes through a coupling)")


def freeze_inexact(groups, scores: dict, roots, reason: str = INEXACT) -> dict:
    """Freeze the groups rooted at ``roots`` (with ``reason``); the scores without them, for the next plan."""
    roots = set(roots)
    for g in groups:
        if g.root in roots:
            g.reason = reason
    return {r: v for r, v in scores.items() if r not in roots}


def _alone(dense, groups, plan, inputs, limit: int):
    """(root, its plan alone, the dense model with only that group pruned, or None when torch-pruning refuses it)
    for the first ``limit`` planned groups."""
    for root in list(plan)[:limit]:
        alone = {root: plan[root]}
        try:
            yield root, alone, apply_plan(dense, groups, alone, tuple(inputs.shape[1:]))[0]
        except PrunekitError:
            yield root, alone, None


def inexact_groups(dense, groups, plan, inputs, limit: int = 64) -> list[str]:
    """The planned groups whose removal alone is not exact (float64 masked ≠ pruned): what to freeze."""
    return [root for root, alone, pruned in _alone(dense, groups, plan, inputs, limit)
            if pruned is None or not _float64_check(dense, pruned, groups, alone, inputs[:4])[2]]


def _culprits(dense, groups, plan, inputs, limit: int = 40) -> list[str]:
    """The planned groups that, pruned alone, leave a model that does not run."""
    bad = []
    for root, _, pruned in _alone(dense, groups, plan, inputs, limit):
        try:
            if pruned is None:
                raise RuntimeError("torch-pruning refused it")
            with torch.no_grad():
                pruned(inputs[:1])
        except RuntimeError:
            bad.append(root)
    return bad


def verify_masked_equals_pruned(dense: nn.Module, pruned: nn.Module, groups: list[ChannelGroup], plan: Plan,
                                inputs: torch.Tensor, atol: float = 1e-4, rtol: float = 1e-5) -> dict:
    """Masked dense model vs physically pruned model on ``inputs``; raises PrunekitError beyond tolerance.

    A pruned model that does not run at all (a coupling torch-pruning did not record) is refused with the
    groups that break it named. A float32 difference over the tolerance is re-checked in float64: deep
    random-init nets accumulate float32 rounding that differs between the masked and the pruned computation;
    if the float64 outputs agree, the surgery is exact and the check passes, saying so."""
    dense.eval()
    pruned.eval()
    with torch.no_grad():
        try:
            out = pruned(inputs)
        except RuntimeError as e:
            bad = _culprits(dense, groups, plan, inputs)
            blame = (f"pruning {', '.join(bad[:6])}{' …' if len(bad) > 6 else ''} alone breaks it" if bad
                     else f"pruned groups: {', '.join(list(plan)[:8])}")
            raise BrokenCut(f"the pruned model does not run ({str(e).splitlines()[0][:160]}): a channel coupling "
                            f"torch-pruning did not record; {blame}", bad) from None
        with masked(dense, groups, plan):
            diff, allowed, ok = compare_outputs(dense(inputs), out, atol, rtol)
    result = {"check": "masked == pruned", "max_abs_diff": diff, "allowed": allowed, "atol": atol, "rtol": rtol,
              "inputs": int(inputs.shape[0]), "passed": ok}
    if not ok and diff == diff and diff != float("inf"):  # finite: is it float32 rounding?
        d64, a64, ok64 = _float64_check(dense, pruned, groups, plan, inputs)
        if ok64:
            ok = result["passed"] = True
            result.update(float64_diff=d64, note=f"float32 rounding: in float64 the outputs agree to {d64:.2g}")
    if not ok:
        raise VerificationError(
            f"verification failed: the masked model and the pruned model differ by {diff:.3g} (> {allowed:.3g}) "
            f"on {inputs.shape[0]} inputs; pruned groups: {', '.join(list(plan)[:8])}")
    return result


def cut_and_verify(model: nn.Module, groups: list[ChannelGroup], scores: dict, plan_fn, inputs: torch.Tensor,
                   atol: float, when: str, attempts: int = 3):
    """The stage both jobs share: plan → cut → verify, and a group whose removal turns out inexact (masked ≠
    pruned in float64: a coupling torch-pruning did not record) frozen by name and the plan made again.

    ``plan_fn(scores)`` returns ``(plan, pruned, history, extra)`` (``pruned`` None: this stage cuts); ``when``
    says in the warning for how long the freeze holds. Returns ``(plan, pruned, history, extra, check,
    frozen)``; a failure that is not an inexact group is raised as it is."""
    from prunekit.progress import warn

    frozen: list[str] = []
    for attempt in range(attempts):
        plan, pruned, history, extra = plan_fn(scores)
        if pruned is None:
            pruned, history = apply_plan(model, groups, plan, tuple(inputs.shape[1:]))
        try:
            check = verify_masked_equals_pruned(model, pruned, groups, plan, inputs, atol)
            return plan, pruned, history, extra, check, frozen
        except BrokenCut as e:
            error, bad, reason, what = e, e.groups, BREAKS, "leaves a model that does not run"
        except VerificationError as e:
            error, bad, reason, what = e, inexact_groups(model, groups, plan, inputs), INEXACT, (
                "is not exact (the masked and the pruned model differ in float64)")
        if not bad or attempt == attempts - 1:
            raise error
        scores = freeze_inexact(groups, scores, bad, reason)
        frozen += bad
        warn(f"removing channels of {', '.join(bad)} {what}: a coupling torch-pruning did not record; froze them "
             f"{when} and planned again", groups=bad)
    raise AssertionError("unreachable")
