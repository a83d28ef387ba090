"""What one search round removes: groups and scores on the round's starting model, a threshold (from the
controller's T, its size step, or the fixed rate), the plan, physical removal and its verification."""
from __future__ import annotations

import copy

import numpy as np

from prunekit.compute.ddp import broadcast_object
from prunekit.core.allocate import knapsack_plan, plan_to_target
from prunekit.core.graph import find_groups
from prunekit.core.trace import build_graph
from prunekit.errors import PrunekitError
from prunekit.core.planning import bisect_threshold, first_cut, plan_for_threshold, threshold_for_size
from prunekit.progress import warn
from prunekit.core.scoring import score_groups
from prunekit.jobs.search.context import SearchContext
from prunekit.core.surgery import cut_and_verify, freeze_inexact
from prunekit.core.costmodel import cost_model


class RoundPlanner:
    def __init__(self, ctx: SearchContext):
        self.ctx = ctx
        # groups found inexact in an earlier round: never planned again (kept in the saved state, so --resume too)
        self.frozen: set[str] = set(ctx.info.get("frozen_inexact", ()))

    def plan(self, scores, cost, T: float):
        return plan_for_threshold(scores, cost, T, self.ctx.basis, self.ctx.round_to)

    def fixed_threshold(self, scores, cost) -> float:
        """Smallest T whose plan removes at least ``rate`` of the remaining prunable channels."""
        want = max(1, int(np.ceil(self.ctx.cfg.rate * sum(len(s) for s in scores.values()))))
        T = bisect_threshold(lambda t: sum(map(len, self.plan(scores, cost, t).values())) >= want, iters=40,
                             limit=1e6)
        return 1e6 if T is None else T

    def step_threshold(self, scores, cost, step: float) -> float:
        """The T whose plan leaves about (1 − step) of ``cost``'s model size (params or MACs), never less than
        the target asks for (params / MACs targets)."""
        ctx = self.ctx
        goal = (cost.dense_params if ctx.measure == "params" else cost.dense_macs) * (1 - step)
        if ctx.target.kind.sizes:
            goal = max(goal, (1 - ctx.target.amount) * ctx.info[ctx.measure])
        T = threshold_for_size(scores, cost, ctx.measure, goal, ctx.round_to, ctx.basis)
        return 1e12 if T is None else T

    def to_target(self, goal: float):
        """A plan override for the top-up: prune straight to ``goal`` (in the target's units)."""
        ctx = self.ctx

        def plan_fn(scores, cost):
            kind = ctx.target.kind
            now = {"params": cost.dense_params, "macs": cost.dense_macs, "latency": cost.dense_latency}[kind]
            plan, _, used = plan_to_target(scores, cost, kind, min(0.999, 1 - goal / now), ctx.round_to,
                                           ctx.cfg.round_to == "auto", ctx.basis, ctx.cfg.allocate,
                                           ctx.cfg.knapsack_value)
            if used != ctx.round_to:
                warn(f"{ctx.target.text} is out of reach with multiples of {ctx.round_to} channels; the "
                     f"top-up aligns to {used}", "alignment")
            return plan
        return plan_fn

    def prune(self, base, T: float | None, seed: int, plan_override=None, step: float | None = None):
        """Groups, scores and plan on ``base``, then physical removal (verified). Returns
        (pruned copy, new history entries, plan, T used, masked == pruned check or None).

        T comes from the caller (threshold mode), from ``step`` (size mode), or from the fixed rate; a plan
        that would remove nothing is raised to the smallest T that removes a channel. A group whose removal
        turns out inexact (masked ≠ pruned in float64: a coupling torch-pruning did not record) is frozen, by
        name, for this and every later round, and the round planned again without it."""
        ctx, cfg = self.ctx, self.ctx.cfg
        size = ctx.spec.input_size
        groups = find_groups(base, build_graph(base, size), ctx.spec.classifier, input_size=size)
        freeze_inexact(groups, {}, self.frozen)
        scores = score_groups(base, groups, cfg.criterion, cfg.p, ctx.calib_batches, compute=ctx.compute,
                              seed=seed, reference=ctx.info["scales"])
        cost = cost_model(base, groups, size, threshold_scale=cfg.threshold_scale, group_cap=cfg.group_cap,
                          table=ctx.table, batch=ctx.latency_batch)

        def plan_fn(scores):
            plan, T_used = self._plan(scores, cost, T, plan_override, step)
            plan, T_used = broadcast_object((plan, T_used))  # rank 0's plan everywhere: scores or tables may differ
            plan = {k: v for k, v in plan.items() if v}
            if not plan:
                return plan, copy.deepcopy(base), [], T_used
            return plan, None, None, T_used
        plan, pruned, hist, T_used, check, frozen = cut_and_verify(
            base, groups, scores, plan_fn, ctx.verify_inputs, cfg.atol, "for the rest of the search")
        if frozen:
            self.frozen.update(frozen)
            ctx.info["frozen_inexact"] = sorted(self.frozen)
        return pruned, hist, plan, T_used, check if plan else None

    def _plan(self, scores, cost, T: float | None, plan_override, step: float | None):
        """(plan, T) of one round: the override's, a knapsack size step's (T None), or the threshold's."""
        ctx, cfg = self.ctx, self.ctx.cfg
        if plan_override is not None:
            return plan_override(scores, cost), T
        if step is not None and cfg.allocate == "knapsack":
            return self.knapsack_step(scores, cost, step), None
        if step is not None:
            T = self.step_threshold(scores, cost, step)
        elif T is None:
            T = self.fixed_threshold(scores, cost)
        T = first_cut(scores, cost, T, ctx.basis, ctx.round_to)
        return self.plan(scores, cost, T), T

    def knapsack_step(self, scores, cost, step: float):
        """Size mode with ``--allocate knapsack``: the plan that loses the least score while leaving about
        (1 − step) of the model's size (never less than the target asks for); empty when nothing may go."""
        ctx = self.ctx
        now = cost.dense_params if ctx.measure == "params" else cost.dense_macs
        goal = now * (1 - step)
        if ctx.target.kind.sizes:
            goal = max(goal, (1 - ctx.target.amount) * ctx.info[ctx.measure])
        amount = 1 - goal / now
        if amount <= 0:
            return {}
        try:
            return knapsack_plan(scores, cost, ctx.measure, min(amount, 0.999), ctx.round_to,
                                 value=ctx.cfg.knapsack_value)
        except PrunekitError:  # the step is out of reach on the grid: everything the grid still allows
            return plan_for_threshold(scores, cost, 1e12, ctx.basis, ctx.round_to)
