"""From scores to plans: layer-aware thresholds (Algorithm 3), alignment to the runtime's channel grid, and the
one threshold search (bisection) behind targets, fixed-rate rounds and size steps.

Layer-aware threshold: a group g prunes channels with score ≤ T · C_g / mean(C), where C_g is the number of
parameters (or MACs, for FLOPs targets) its channels touch and the mean runs over the prunable groups. This
is Algorithm 3 (T · C_g / ΣC) with T rescaled by the number of groups, so that T is on the scale of the
scores (mean 1 per group): at T = 1 a group of average size prunes channels below its mean activity.
At least one channel of every group is kept.
"""
from __future__ import annotations

import math

import numpy as np

from prunekit.config.targets import CostBasis
from prunekit.core.costmodel import CostModel, Plan, reduction
from prunekit.errors import OutOfReach, PrunekitError


def layer_thresholds(cost: CostModel, roots: list[str], T: float, basis: str = "params") -> dict[str, float]:
    """Algorithm 3: per-group threshold T · C_g / mean(C) (C = params, MACs or latency its channels cost)."""
    c = {CostBasis.params: cost.group_params, CostBasis.macs: cost.group_macs,
         CostBasis.latency: cost.group_latency}[CostBasis(basis)]
    if cost.threshold_scale == "per-layer":  # a residual stream touching 18 convs weighs as one of them
        c = {r: v / cost.group_layers.get(r, 1) for r, v in c.items()}
    mean = float(np.mean([c[r] for r in roots])) if roots else 1.0
    return {r: T * c[r] / mean if mean > 0 else T for r in roots}


def aligned_keep(channels: int, keep: int, round_to: int) -> int:
    """How many of a group's ``channels`` to keep when the threshold keeps ``keep``: the nearest multiple of
    ``round_to`` that is ≥ ``round_to`` and < ``channels``, or ``channels`` itself (ties keep more). A group
    with no such multiple (narrower than 2 × ``round_to``, unless it is wider than a multiple) stays whole."""
    if round_to <= 1 or keep >= channels:
        return keep
    options = [m for m in range(round_to, channels, round_to)] + [channels]
    return min(options, key=lambda m: (abs(m - keep), -m))


def removal_order(scores: np.ndarray, segments: list[np.ndarray] | None = None,
                  stripes: list[int] | None = None) -> tuple[np.ndarray, int]:
    """A group's channels in the order a plan removes them (lowest score first) and how many it must keep: one.
    With ``segments`` (the root channels of each layer the group owns only part of, e.g. one chunk of a mixed
    conv), each segment's best channel goes last — with its whole stripe, in a striped group — and the floor is
    the number of those channels, so no plan empties a layer through a coupling."""
    order = np.argsort(scores, kind="stable")
    if not segments:
        return order, 1
    keepers = {int(seg[np.argmax(scores[seg])]) for seg in segments if len(seg)}
    if stripes is not None:
        kept = {stripes[k] for k in keepers}
        keepers = {i for i, st in enumerate(stripes) if st in kept}
    last = np.isin(order, list(keepers))
    return np.concatenate([order[~last], order[last]]), max(1, len(keepers))


def _empties(pruned: np.ndarray, segments: list[np.ndarray] | None) -> bool:
    return bool(segments) and any(np.isin(seg, pruned).all() for seg in segments)


def plan_for_threshold(scores: dict[str, np.ndarray], cost: CostModel, T: float, basis: str = "params",
                       round_to: int = 1) -> Plan:
    """Channels with score ≤ their group's threshold; the best channel of every group is always kept.

    With ``round_to`` > 1 each pruned group keeps a multiple of it (see :func:`aligned_keep`): the lowest-scored
    channels go first, so the plan may remove a few channels above the threshold or keep a few below it. No plan
    empties a layer the group owns a part of (:func:`removal_order`)."""
    thresholds = layer_thresholds(cost, list(scores), T, basis)
    plan: Plan = {}
    for root, s in scores.items():
        step = math.lcm(round_to, cost.group_unit.get(root, 1))  # a striped group keeps whole stripes
        segments = cost.group_segments.get(root)
        order, floor = removal_order(s, segments, cost.group_stripes.get(root))
        pruned = np.flatnonzero(s <= thresholds[root])
        c = len(s)
        keep = c - len(pruned)
        min_keep = math.ceil((1 - cost.group_cap) * c - 1e-9) if cost.group_cap < 1 else 1
        min_keep = max(min_keep, floor)
        keep = max(keep, min_keep)  # at most group_cap of the group goes in one plan; each segment keeps one
        if step > 1 and keep < c:
            keep = aligned_keep(c, keep, step)
            if keep < min_keep:  # the nearest multiple cut past the cap: the next one up
                keep = min(m for m in [*range(step, c, step), c] if m >= min_keep)
        if keep != c - len(pruned) or _empties(pruned, segments):  # the lowest-scored channels go first
            pruned = np.sort(order[:c - keep])
        if len(pruned):
            plan[root] = [int(i) for i in pruned]
    return plan


def bisect_threshold(holds, hi: float = 1.0, iters: int = 60, limit: float = 1e9) -> float | None:
    """Smallest T ≥ 0 (to ``iters`` halvings) with ``holds(T)`` true, for a ``holds`` monotone in T; None when
    even ``limit`` does not hold. The one threshold search of prunekit (targets, fixed-rate rounds, steps)."""
    while not holds(hi):
        hi *= 2
        if hi > limit:
            return None
    lo = 0.0
    for _ in range(iters):
        mid = (lo + hi) / 2
        if holds(mid):
            hi = mid
        else:
            lo = mid
    return hi


def plan_for_target(scores: dict[str, np.ndarray], cost: CostModel, measure: str, amount: float,
                    iters: int = 60, round_to: int = 1, basis: str | None = None) -> tuple[Plan, float]:
    """Smallest global T whose plan removes at least ``amount`` of params / MACs / latency (bisection on T).

    ``measure`` is what the target counts (params, macs, latency); ``basis`` (default: the same) what Algorithm 3
    scales thresholds by (:class:`prunekit.config.CostBasis`)."""
    if not 0 < amount < 1:
        raise PrunekitError(f"target reduction must be between 0 and 1 (exclusive), got {amount}")
    if not scores:
        raise PrunekitError("the model has no prunable channel groups")

    def plan(T):
        return plan_for_threshold(scores, cost, T, basis or measure, round_to)

    T = bisect_threshold(lambda t: reduction(cost, plan(t), measure) >= amount, iters=iters if measure != "latency" else
                         min(iters, 30))
    if T is None:
        best = reduction(cost, plan(1e12), measure)
        aligned = f" with every group a multiple of {round_to} channels" if round_to > 1 else ""
        raise OutOfReach(
            f"{measure} target {amount:.1%} is out of reach: pruning every prunable group as far as it goes{aligned} "
            f"removes {best:.1%}" + (" (try a smaller --round-to)" if round_to > 1 else ""), closest=best)
    return plan(T), T


def threshold_for_size(scores: dict[str, np.ndarray], cost: CostModel, measure: str, goal: float, round_to: int = 1,
                       basis: str | None = None, overshoot: float = 1.5) -> float | None:
    """The T whose plan leaves about ``goal`` params (``measure="params"``) or MACs: how a size step becomes a
    threshold. Plans change in jumps (a residual stream, an aligned block); the smallest T that reaches the
    goal is taken unless it removes more than ``overshoot`` × the asked-for amount, then the last T before it
    (which removes less). None when no T reaches the goal."""
    def size(T):
        p, m = cost.predict(plan_for_threshold(scores, cost, T, basis or measure, round_to))
        return p if measure == "params" else m
    hi = bisect_threshold(lambda t: size(t) <= goal, limit=1e12)
    if hi is None:
        return None
    now = cost.dense_params if measure == "params" else cost.dense_macs
    lo = hi * (1 - 1e-9)
    if now - size(hi) > overshoot * (now - goal) and size(lo) < now:
        return lo
    return hi


def first_cut(scores: dict[str, np.ndarray], cost: CostModel, T: float, basis: str, round_to: int = 1) -> float:
    """``T`` if its plan removes a channel, else the smallest T that does (so no round prunes nothing)."""
    if any(plan_for_threshold(scores, cost, T, basis, round_to).values()):
        return T
    t = bisect_threshold(lambda x: any(plan_for_threshold(scores, cost, x, basis, round_to).values()), limit=1e12)
    return T if t is None else t
