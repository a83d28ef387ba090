"""Widths chosen by cost: a knapsack over every prunable group's candidate kept widths (NVIDIA HALP's
allocation, on prunekit's cost model).

For every prunable group g with C_g channels the candidates are the widths the runtime runs well (multiples
of ``round_to`` below C_g, and C_g itself; at most ``max_options`` of them, evenly spread); keeping k channels
keeps the k best-scored ones. The *value* of a choice is the sum of the kept channels' scores (what
pruning loses is the sum of the removed ones), each weighted by the number of conv / linear layers its group
touches (``value="layers"``, the default: scores have mean 1 in every group, and a residual-stream channel
read and written by every block of its stage carries more than a channel inside one block — unweighted, the
stream is the cheapest cut per unit of value and takes the whole cut; ``value="score"`` leaves scores as
they are); its *cost* is what the kept model costs by the target's measure: params, MACs or the latency
table's prediction. We choose one width per group to lose the least
score while removing at least the asked-for share of the cost:

1. **DP** (:func:`min_loss_choice`): a group's saving is linearised — the cost the model saves when that
   group alone goes to width k while every other group stays where the current solution has it — and
   discretised *down* onto ``bins`` steps of the required saving; a dynamic programme over the groups then
   gives the exact optimum of that discretised problem (proved against brute force in the tests).
2. **Re-linearise** around the DP's answer and solve again (a conv's cost couples its input and output
   groups, so one group's saving depends on its neighbours' widths), ``iters`` times.
3. **Exact finish** on the real cost model: while the plan removes too little, take the grid step with the
   least score lost per unit of cost saved; then, while a group can grow to a wider grid width and the plan still
   meets the target, give back the step that restores the most score. The plan therefore meets the target
   exactly as the cost model predicts it, and overshoots it by no more than one grid step of some group.
"""
from __future__ import annotations

import math

import numpy as np

from prunekit.runtimes.base import candidate_widths
from prunekit.errors import OutOfReach, PrunekitError
from prunekit.core.costmodel import CostModel, Plan, reduction
from prunekit.core.planning import removal_order


def min_loss_choice(options: list[list[tuple[int, float]]], required: int) -> list[int] | None:
    """One option per group, minimising the summed loss subject to summed saving ≥ ``required``.

    ``options[g]`` lists (saving, loss) pairs with integer savings ≥ 0. Exact dynamic programme over the saving
    (capped at ``required``): O(groups × options × required). Returns the chosen option index of every group,
    or None when even the largest savings do not add up to ``required``."""
    R = max(0, int(required))
    dp = np.full(R + 1, np.inf)
    dp[0] = 0.0
    tables, choices = [], []
    for opts in options:
        new = np.full(R + 1, np.inf)
        choice = np.full(R + 1, -1, dtype=np.int64)
        for j, (saving, loss) in enumerate(opts):
            s = min(max(int(saving), 0), R)
            cand = np.full(R + 1, np.inf)
            if s > 0:
                cand[s:R] = dp[:R - s] + loss
                cand[R] = dp[R - s:].min() + loss
            else:
                cand = dp + loss
            better = cand < new
            new[better], choice[better] = cand[better], j
        tables.append(dp)
        choices.append(choice)
        dp = new
    if not np.isfinite(dp[R]):
        return None
    picked = [0] * len(options)
    b = R
    for g in range(len(options) - 1, -1, -1):
        j = int(choices[g][b])
        picked[g] = j
        s = min(max(int(options[g][j][0]), 0), R)
        prev = tables[g]
        if b < R or s == 0:
            b -= s
        else:  # b == R: any previous state ≥ R − s reached it; take the one the DP used (the cheapest)
            b = R - s + int(np.argmin(prev[R - s:]))
    return picked


class _Problem:
    """The groups, their sorted scores and the exact cost of any choice of widths."""

    def __init__(self, scores: dict[str, np.ndarray], cost: CostModel, measure: str, round_to: int, max_options: int,
                 value: str = "layers", branch_values: dict[str, float] | None = None):
        self.cost, self.measure, self.round_to = cost, measure, round_to
        self.roots = [r for r in scores if len(scores[r]) > 0]
        # lowest score first; a layer the group owns a part of keeps its best channel (floor: how many those are)
        ordered = {r: removal_order(np.asarray(scores[r]), cost.group_segments.get(r), cost.group_stripes.get(r))
                   for r in self.roots}
        self.order = {r: o for r, (o, _) in ordered.items()}
        self.channels = {r: len(scores[r]) for r in self.roots}
        # a channel's value: its score, times the conv / linear layers it feeds and is fed by ("layers")
        weight = {r: float(cost.group_layers.get(r, 1)) if value == "layers" else 1.0 for r in self.roots}
        self.loss_prefix = {r: weight[r] * np.concatenate([[0.0], np.cumsum(np.asarray(scores[r], float)[
            self.order[r]])]) for r in self.roots}
        cap = cost.group_cap
        # a striped group (a grouped conv's channels) keeps whole stripes: widths on the multiple of both
        self.widths = {r: candidate_widths(c, math.lcm(round_to, cost.group_unit.get(r, 1)), max(
            math.ceil((1 - cap) * c - 1e-9) if cap < 1 else 1, ordered[r][1]), max_options)
                       for r, c in self.channels.items()}
        # a group that opens a residual branch may also take width 0: the branch dropped, valued as all its
        # channels times the branch's importance relative to the other branches (mean 1)
        self.branch_values = {r: float(v) for r, v in (branch_values or {}).items() if r in cost.branch_layers}
        for r in self.roots:
            if r in cost.branch_layers:
                self.widths[r] = [0] + self.widths[r]
        self._memo: dict[tuple, float] = {}

    def loss(self, root: str, width: int) -> float:
        full = float(self.loss_prefix[root][self.channels[root] - width])
        return full * self.branch_values.get(root, 1.0) if width == 0 else full

    def plan(self, widths: dict[str, int]) -> Plan:
        return {r: sorted(int(i) for i in self.order[r][:self.channels[r] - w])
                for r, w in widths.items() if w < self.channels[r]}

    def saved(self, widths: dict[str, int]) -> float:
        """Share of the dense cost the choice removes (exact, cost model)."""
        key = tuple(widths[r] for r in self.roots)
        if key not in self._memo:
            self._memo[key] = reduction(self.cost, self.plan(widths), self.measure)
        return self._memo[key]


def knapsack_plan(scores: dict[str, np.ndarray], cost: CostModel, measure: str, amount: float, round_to: int = 1,
                  bins: int = 2000, iters: int = 3, max_options: int = 64, value: str = "layers",
                  branch_values: dict[str, float] | None = None) -> Plan:
    """The plan that loses the least score while removing at least ``amount`` of ``measure`` (params, macs or
    latency, as :func:`prunekit.core.costmodel.reduction` predicts it), every pruned group on the ``round_to`` grid
    (or, for a group that opens a residual branch the cost model knows, at width 0: the branch dropped;
    ``branch_values`` weigh each such drop)."""
    if not 0 < amount < 1:
        raise PrunekitError(f"target reduction must be between 0 and 1 (exclusive), got {amount}")
    if not scores:
        raise PrunekitError("the model has no prunable channel groups")
    pb = _Problem(scores, cost, measure, round_to, max_options, value, branch_values)
    full = {r: pb.channels[r] for r in pb.roots}
    widths = dict(full)
    for _ in range(iters):
        base = pb.saved(widths)
        options, unit = [], amount / bins
        for r in pb.roots:  # saving of each width for this group, the others where the current solution is
            at_full = pb.saved({**widths, r: full[r]})
            opts = []
            for w in pb.widths[r]:
                s = pb.saved({**widths, r: w}) - at_full
                if w in (full[r], widths[r]) or s > 0:  # a narrower width that saves nothing never pays
                    opts.append((w, int(math.floor(max(s, 0.0) / unit)), pb.loss(r, w)))
            options.append(opts)
        # the others' fixed part: what the current solution saves beyond the linear sum (coupling terms)
        linear = sum(next(s for w, s, _ in opts if w == widths[r]) for r, opts in zip(pb.roots, options)) * unit
        need = max(0.0, amount - (base - linear))
        picked = min_loss_choice([[(s, v) for _, s, v in opts] for opts in options], math.ceil(need / unit))
        if picked is None:
            break
        new = {r: opts[j][0] for r, opts, j in zip(pb.roots, options, picked)}
        if new == widths:
            break
        widths = new
    return pb.plan(_exact_finish(pb, widths, amount))


def _moves(pb: _Problem, widths: dict[str, int], direction: int):
    """(root, new width) for every narrower (-1) or wider (+1) grid width of every group: with a latency table
    time is not always monotone in width (a width off the runtime's block can be slower than a narrower one),
    so the finish looks past the next step."""
    for r in pb.roots:
        for w in pb.widths[r]:
            if (w - widths[r]) * direction > 0:
                yield r, w


def _exact_finish(pb: _Problem, widths: dict[str, int], amount: float) -> dict[str, int]:
    widths = dict(widths)
    while pb.saved(widths) < amount:  # too little removed: the cheapest move in score per unit of cost saved
        now, moves = pb.saved(widths), []
        for r, w in _moves(pb, widths, -1):
            gain = pb.saved({**widths, r: w}) - now
            if gain > 0:
                moves.append(((pb.loss(r, w) - pb.loss(r, widths[r])) / gain, r, w))
        if not moves:
            grid = f" with every group a multiple of {pb.round_to} channels" if pb.round_to > 1 else ""
            raise OutOfReach(
                f"{pb.measure} target {amount:.1%} is out of reach: the best plan{grid} removes {now:.1%}"
                + (" (try a smaller --round-to)" if pb.round_to > 1 else ""), closest=now)
        _, r, w = min(moves)
        widths[r] = w
    while True:  # more than needed: give back what restores the most score and still meets the target
        moves = [(pb.loss(r, widths[r]) - pb.loss(r, w), r, w) for r, w in _moves(pb, widths, +1)
                 if pb.saved({**widths, r: w}) >= amount]
        if not moves:
            return widths
        _, r, w = max(moves)
        widths[r] = w


def plan_to_target(scores: dict[str, np.ndarray], cost: CostModel, measure: str, amount: float, round_to: int,
                   relax: bool, basis: str | None = None, method: str = "threshold", value: str = "layers",
                   branch_values: dict[str, float] | None = None) -> tuple[Plan, float | None, int]:
    """The plan for a one-shot target by ``method``: ``threshold`` (Algorithm 3's global threshold, bisected,
    then rounded to the grid) or ``knapsack`` (:func:`knapsack_plan`). With ``relax`` (``--round-to auto``), a
    target out of reach on the grid is retried on half the multiple until it is reachable.
    Returns (plan, T or None for the knapsack, the multiple used)."""
    from prunekit.core.planning import plan_for_target

    while True:
        try:
            if method == "knapsack":
                plan = knapsack_plan(scores, cost, measure, amount, round_to, value=value,
                                     branch_values=branch_values)
                return plan, None, round_to
            plan, T = plan_for_target(scores, cost, measure, amount, round_to=round_to, basis=basis)
            return plan, T, round_to
        except OutOfReach:
            if not relax or round_to <= 1:
                raise
            round_to //= 2
