"""From scores to filter masks: layer-aware thresholds (Algorithm 3), one-shot target search, masking.

A *plan* maps each group's root conv name to the sorted root-channel indices to remove. Masking a plan
zeroes those channels at the input of every consumer (the next conv / linear / shortcut), i.e. after
BatchNorm and activation: there, the masked dense model computes exactly what the physically pruned model
computes (zeroing at the conv output would not be exact, the BatchNorm shift would leak through).

Layer-aware threshold: a group g prunes channels with score ≤ T · C_g / mean(C), where C_g is the number of
parameters (or MACs, for FLOPs targets) its channels touch and the mean runs over the prunable groups. This
is Algorithm 3 (T · C_g / ΣC) with T rescaled by the number of groups, so that T is on the scale of the
scores (mean 1 per group): at T = 1 a group of average size prunes channels below its mean activity.
At least one channel of every group is kept.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn

from prunekit.errors import PrunekitError
from prunekit.core.graph import ChannelGroup
from prunekit.core.metrics import output_positions

Plan = dict[str, list[int]]


@dataclass
class CostModel:
    """Predicts params and MACs (exactly) and, with a latency table attached, latency of the model a plan
    would produce, without touching the model."""

    layers: dict[str, tuple]  # name -> (kind, out, in, k, groups_or_depthwise, bias, positions)
    dense_params: int
    dense_macs: int
    group_params: dict[str, float]
    group_macs: dict[str, float]
    _removed_index: dict[str, list[tuple[str, str, np.ndarray]]]
    group_latency: dict[str, float] = field(default_factory=dict)
    shapes: dict = field(default_factory=dict)  # layer name -> LayerShape (with a latency table)
    table: object | None = None  # prunekit.deploy.latency.LatencyTable
    dense_latency: float = 0.0  # Σ table(dense layers), ms
    group_layers: dict[str, int] = field(default_factory=dict)  # conv / linear layers each group touches
    # planning rules (issue: one coupled group must not take the whole cut):
    threshold_scale: str = "total"  # C_g = the group's whole cost ("total", Algorithm 3) or per member layer
    group_cap: float = 1.0  # at most this share of a group's channels goes in one plan

    @classmethod
    def build(cls, model: nn.Module, groups: list[ChannelGroup], input_size) -> CostModel:
        positions = output_positions(model, input_size)
        named = dict(model.named_modules())
        layers = {}
        for name, m in named.items():
            if isinstance(m, nn.Conv2d) and name in positions:
                dw = m.groups > 1 and m.groups == m.in_channels == m.out_channels
                layers[name] = ("conv", m.out_channels, m.in_channels, m.kernel_size[0] * m.kernel_size[1],
                                "dw" if dw else m.groups, m.bias is not None, positions[name])
            elif isinstance(m, nn.Linear) and name in positions:
                layers[name] = ("linear", m.out_features, m.in_features, 1, 1, m.bias is not None, positions[name])
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and m.affine:
                layers[name] = ("bn", m.num_features, m.num_features, 0, 1, False, 0)
        dense_params = sum(p.numel() for p in model.parameters())
        self = cls(layers, dense_params, 0, {}, {}, {})
        self.dense_macs = sum(self._layer(n, 0, 0)[1] for n in layers)
        for g in groups:
            if not g.prunable:
                continue
            p_total = m_total = 0.0
            index = []
            for mem in g.members:
                if mem.module not in layers:
                    continue
                full_p, full_m = self._layer(mem.module, 0, 0)
                dim = layers[mem.module][1] if mem.kind == "out" else layers[mem.module][2]
                if layers[mem.module][4] == "dw" and mem.kind == "in":
                    continue  # a depthwise conv's channels are counted once, on the output side
                share = len(mem.idxs) / max(dim, 1)
                p_total += full_p * share
                m_total += full_m * share
                index.append((mem.module, mem.kind, np.asarray(mem.root_idxs)))
            self.group_params[g.root] = p_total
            self.group_macs[g.root] = m_total
            self.group_layers[g.root] = max(1, len({m for m, _, _ in index}))
            self._removed_index[g.root] = index
        return self

    def _layer(self, name: str, r_out: int, r_in: int) -> tuple[int, int]:
        kind, out_c, in_c, k, groups, bias, pos = self.layers[name]
        if kind == "bn":
            c = out_c - max(r_out, r_in)
            return 2 * c, 0
        o, i = out_c - r_out, in_c - r_in
        if groups == "dw":
            c = out_c - max(r_out, r_in)  # in and out channels of a depthwise conv go together
            return c * k + (c if bias else 0), c * k * pos
        w = o * (i // groups) * k
        return w + (o if bias else 0), w * pos

    def _removed(self, plan: Plan) -> tuple[dict[str, int], dict[str, int]]:
        """Output and input channels each layer loses under ``plan``."""
        r_out: dict[str, int] = {}
        r_in: dict[str, int] = {}
        for root, idxs in plan.items():
            if not idxs:
                continue
            removed = np.zeros(max(max(idxs) + 1, 1), dtype=bool)
            removed[idxs] = True
            for module, kind, roots in self._removed_index[root]:
                n = int(removed[roots[roots < len(removed)]].sum())
                target = r_out if kind == "out" else r_in
                target[module] = target.get(module, 0) + n
        return r_out, r_in

    def attach_latency(self, model: nn.Module, input_size, table, batch: int = 1) -> CostModel:
        """Measure (or look up) every layer's latency: enables ``by="latency"`` thresholds and
        :meth:`predict_latency`. A group's latency cost is its channels' share of each member layer's time."""
        from prunekit.deploy.latency import layer_shapes

        self.shapes = {n: s for n, s in layer_shapes(model, input_size, batch).items() if n in self.layers}
        self.table = table
        self.dense_latency = table.total(self.shapes.values())
        for root, index in self._removed_index.items():
            total = 0.0
            for module, kind, roots in index:
                if module in self.shapes:
                    shape = self.shapes[module]
                    total += table.ms(shape) * len(roots) / max(shape.out_c if kind == "out" else shape.in_c, 1)
            self.group_latency[root] = total
        table.save()
        return self

    def predict_latency(self, plan: Plan) -> float:
        """Σ latency-table time (ms) of the layers the plan leaves: compare it with :attr:`dense_latency`."""
        if self.table is None:
            raise ValueError("no latency table attached (CostModel.attach_latency)")
        r_out, r_in = self._removed(plan)
        total = 0.0
        for name, shape in self.shapes.items():
            o, i = shape.out_c - r_out.get(name, 0), shape.in_c - r_in.get(name, 0)
            if self.layers[name][4] == "dw":
                o = i = shape.out_c - max(r_out.get(name, 0), r_in.get(name, 0))
            total += self.table.ms(shape.resized(i, o))
        return total

    def predict(self, plan: Plan) -> tuple[int, int]:
        """(params, MACs) of the model after removing ``plan``."""
        r_out, r_in = self._removed(plan)
        params, macs = self.dense_params, self.dense_macs
        for name in set(r_out) | set(r_in):
            p0, m0 = self._layer(name, 0, 0)
            p1, m1 = self._layer(name, r_out.get(name, 0), r_in.get(name, 0))
            params -= p0 - p1
            macs -= m0 - m1
        return params, macs


def layer_thresholds(cost: CostModel, roots: list[str], T: float, by: str = "params") -> dict[str, float]:
    """Algorithm 3: per-group threshold T · C_g / mean(C) (C = params, MACs or latency its channels cost)."""
    c = {"params": cost.group_params, "macs": cost.group_macs, "latency": cost.group_latency}[by]
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


def plan_for_threshold(scores: dict[str, np.ndarray], cost: CostModel, T: float, by: str = "params",
                       round_to: int = 1) -> Plan:
    """Channels with score ≤ their group's threshold; the best channel of every group is always kept.

    With ``round_to`` > 1 each pruned group keeps a multiple of it (see :func:`aligned_keep`): the lowest-scored
    channels go first, so the plan may remove a few channels above the threshold or keep a few below it."""
    thresholds = layer_thresholds(cost, list(scores), T, by)
    plan: Plan = {}
    for root, s in scores.items():
        pruned = np.flatnonzero(s <= thresholds[root])
        if len(pruned) >= len(s):
            pruned = np.delete(np.arange(len(s)), int(np.argmax(s)))
        c = len(s)
        keep = c - len(pruned)
        min_keep = math.ceil((1 - cost.group_cap) * c - 1e-9) if cost.group_cap < 1 else 1
        keep = max(keep, min_keep)  # at most group_cap of the group goes in one plan
        if round_to > 1 and keep < c:
            keep = aligned_keep(c, keep, round_to)
            if keep < min_keep:  # the nearest multiple cut past the cap: the next one up
                keep = min(m for m in [*range(round_to, c, round_to), c] if m >= min_keep)
        if keep != c - len(pruned):  # the lowest-scored channels go first
            pruned = np.sort(np.argsort(s, kind="stable")[:c - keep])
        if len(pruned):
            plan[root] = [int(i) for i in pruned]
    return plan


def reduction(cost: CostModel, plan: Plan, by: str) -> float:
    """Predicted fraction of params, MACs or (table) latency that ``plan`` removes."""
    if by == "latency":
        return 1 - cost.predict_latency(plan) / cost.dense_latency
    params, macs = cost.predict(plan)
    return 1 - params / cost.dense_params if by == "params" else 1 - macs / cost.dense_macs


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


def plan_for_target(scores: dict[str, np.ndarray], cost: CostModel, by: str, amount: float,
                    iters: int = 60, round_to: int = 1, cost_by: str | None = None) -> tuple[Plan, float]:
    """Smallest global T whose plan removes at least ``amount`` of params / MACs / latency (bisection on T).

    ``by`` is what the target measures; ``cost_by`` (default: the same) what Algorithm 3 scales thresholds by."""
    if not 0 < amount < 1:
        raise PrunekitError(f"target reduction must be between 0 and 1 (exclusive), got {amount}")
    if not scores:
        raise PrunekitError("the model has no prunable channel groups")

    def plan(T):
        return plan_for_threshold(scores, cost, T, cost_by or by, round_to)

    T = bisect_threshold(lambda t: reduction(cost, plan(t), by) >= amount, iters=iters if by != "latency" else
                         min(iters, 30))
    if T is None:
        best = reduction(cost, plan(1e12), by)
        aligned = f" with every group a multiple of {round_to} channels" if round_to > 1 else ""
        raise PrunekitError(
            f"{by} target {amount:.1%} is out of reach: pruning every prunable group as far as it goes{aligned} "
            f"removes {best:.1%}" + (" (try a smaller --round-to)" if round_to > 1 else ""))
    return plan(T), T


def threshold_for_size(scores: dict[str, np.ndarray], cost: CostModel, by: str, goal: float, round_to: int = 1,
                       cost_by: str | None = None, overshoot: float = 1.5) -> float | None:
    """The T whose plan leaves about ``goal`` params (``by="params"``) or MACs: how a size step becomes a
    threshold. Plans change in jumps (a residual stream, an aligned block); the smallest T that reaches the
    goal is taken unless it removes more than ``overshoot`` × the asked-for amount, then the last T before it
    (which removes less). None when no T reaches the goal."""
    def size(T):
        p, m = cost.predict(plan_for_threshold(scores, cost, T, cost_by or by, round_to))
        return p if by == "params" else m
    hi = bisect_threshold(lambda t: size(t) <= goal, limit=1e12)
    if hi is None:
        return None
    now = cost.dense_params if by == "params" else cost.dense_macs
    lo = hi * (1 - 1e-9)
    if now - size(hi) > overshoot * (now - goal) and size(lo) < now:
        return lo
    return hi


def first_cut(scores: dict[str, np.ndarray], cost: CostModel, T: float, by: str, round_to: int = 1) -> float:
    """``T`` if its plan removes a channel, else the smallest T that does (so no round prunes nothing)."""
    if any(plan_for_threshold(scores, cost, T, by, round_to).values()):
        return T
    t = bisect_threshold(lambda x: any(plan_for_threshold(scores, cost, x, by, round_to).values()), limit=1e12)
    return T if t is None else t


def consumer_masks(model: nn.Module, groups: list[ChannelGroup], plan: Plan) -> dict[str, torch.Tensor]:
    """Per consumer module: a 0/1 vector over its input channels (0 = pruned)."""
    named = dict(model.named_modules())
    masks: dict[str, torch.Tensor] = {}
    by_root = {g.root: g for g in groups}
    for root, pruned in plan.items():
        g = by_root[root]
        removed = set(pruned)
        for m in g.consumers(named):
            mod = named[m.module]
            width = mod.in_features if isinstance(mod, nn.Linear) else mod.in_channels
            mask = masks.setdefault(m.module, torch.ones(width))
            for idx, r in zip(m.idxs, m.root_idxs):
                if r in removed:
                    mask[idx] = 0.0
    return masks


@contextlib.contextmanager
def masked(model: nn.Module, groups: list[ChannelGroup], plan: Plan):
    """Within the block, ``model`` behaves as if ``plan`` were removed (pruned channels zeroed at consumers)."""
    named = dict(model.named_modules())
    hooks = []
    for name, mask in consumer_masks(model, groups, plan).items():
        def hook(mod, args, mask=mask):
            x = args[0]
            shape = [1, -1] + [1] * (x.dim() - 2) if not isinstance(mod, nn.Linear) else [1] * (x.dim() - 1) + [-1]
            return (x * mask.to(x.dtype).view(shape),) + tuple(args[1:])
        hooks.append(named[name].register_forward_pre_hook(hook))
    try:
        yield model
    finally:
        for h in hooks:
            h.remove()
