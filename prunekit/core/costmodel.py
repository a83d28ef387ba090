"""What a plan costs, predicted without touching the model: params and MACs exactly, latency from a per-layer
latency table. :class:`CostModel` holds one :class:`LayerCost` per conv / linear / BatchNorm layer and, per
prunable group, what its channels cost in params, MACs and (table) latency: the weights Algorithm 3 scales
thresholds by (the cost basis, :class:`~prunekit.config.targets.CostBasis`) and the knapsack's costs.

A *plan* maps each group's root conv name to the sorted root-channel indices to remove. Removing every channel
of a group that opens a residual branch (``ChannelGroup.branch``) drops the branch: every layer of it costs
nothing then (:mod:`prunekit.core.branches`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch.nn as nn

from prunekit.config.targets import CostBasis
from prunekit.core.branches import branch_layers
from prunekit.core.graph import ChannelGroup
from prunekit.core.metrics import output_positions

Plan = dict[str, list[int]]


@dataclass(frozen=True)
class LayerCost:
    """One layer's shape as far as its cost goes."""
    kind: str  # "conv" | "linear" | "bn"
    out_c: int
    in_c: int
    k: int  # kernel elements (kh × kw; 1 for linear, 0 for BatchNorm)
    groups: int  # conv groups
    depthwise: bool  # groups == in == out: in and out channels are removed together
    bias: bool
    positions: int  # output positions (H × W) per image: MACs = weights × positions


@dataclass
class CostModel:
    """Predicts params and MACs (exactly) and, with a latency table attached, latency of the model a plan
    would produce, without touching the model."""

    layers: dict[str, LayerCost]  # conv, linear and affine BatchNorm layers by module name
    dense_params: int
    dense_macs: int
    group_params: dict[str, float]
    group_macs: dict[str, float]
    _removed_index: dict[str, list[tuple[str, str, np.ndarray]]]
    group_latency: dict[str, float] = field(default_factory=dict)
    shapes: dict = field(default_factory=dict)  # layer name -> LayerShape (with a latency table)
    table: object | None = None  # prunekit.deploy.latency_table.LatencyTable
    dense_latency: float = 0.0  # Σ table(dense layers), ms
    group_layers: dict[str, int] = field(default_factory=dict)  # conv / linear layers each group touches
    group_unit: dict[str, int] = field(default_factory=dict)  # channels a group removes together (stripes)
    # root → the root channels of each layer the group owns only part of (a mixed conv's chunk): a plan keeps one
    group_segments: dict[str, list[np.ndarray]] = field(default_factory=dict)
    group_stripes: dict[str, list[int]] = field(default_factory=dict)  # root → each channel's stripe (unit > 1)
    branch_layers: dict[str, tuple[str, ...]] = field(default_factory=dict)  # root → the layers its width 0 drops
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
                layers[name] = LayerCost("conv", m.out_channels, m.in_channels, m.kernel_size[0] * m.kernel_size[1],
                                         m.groups, dw, m.bias is not None, positions[name])
            elif isinstance(m, nn.Linear) and name in positions:
                layers[name] = LayerCost("linear", m.out_features, m.in_features, 1, 1, False, m.bias is not None,
                                         positions[name])
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and m.affine:
                layers[name] = LayerCost("bn", m.num_features, m.num_features, 0, 1, False, False, 0)
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
                layer = layers[mem.module]
                dim = layer.out_c if mem.kind == "out" else layer.in_c
                if layer.depthwise and mem.kind == "in":
                    continue  # a depthwise conv's channels are counted once, on the output side
                share = len(mem.idxs) / max(dim, 1)
                if len(mem.idxs) == dim < g.channels:  # all of this layer's channels, a part of the group's
                    self.group_segments.setdefault(g.root, []).append(np.unique(mem.root_idxs))
                p_total += full_p * share
                m_total += full_m * share
                index.append((mem.module, mem.kind, np.asarray(mem.root_idxs)))
            if g.branch:
                self.branch_layers[g.root] = tuple(n for n in branch_layers(model, g.branch) if n in layers)
            self.group_params[g.root] = p_total
            self.group_macs[g.root] = m_total
            self.group_layers[g.root] = max(1, len({m for m, _, _ in index}))
            self.group_unit[g.root] = g.unit
            if g.unit > 1 and g.stripes is not None:
                self.group_stripes[g.root] = list(g.stripes)
            self._removed_index[g.root] = index
        return self

    def _layer(self, name: str, r_out: int, r_in: int) -> tuple[int, int]:
        lc = self.layers[name]
        if lc.kind == "bn":
            c = lc.out_c - max(r_out, r_in)
            return 2 * c, 0
        o, i = lc.out_c - r_out, lc.in_c - r_in
        if lc.depthwise:
            c = lc.out_c - max(r_out, r_in)  # in and out channels of a depthwise conv go together
            return c * lc.k + (c if lc.bias else 0), c * lc.k * lc.positions
        w = o * (i // lc.groups) * lc.k
        return w + (o if lc.bias else 0), w * lc.positions

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
        for root, idxs in plan.items():  # a dropped branch: every layer of it is gone
            if root in self.branch_layers and len(set(idxs)) >= self.channels_of(root):
                for name in self.branch_layers[root]:
                    r_out[name], r_in[name] = self.layers[name].out_c, self.layers[name].in_c
        return r_out, r_in

    def channels_of(self, root: str) -> int:
        layer = self.layers[root]
        return layer.out_c

    def attach_latency(self, model: nn.Module, input_size, table, batch: int = 1) -> CostModel:
        """Measure (or look up) every layer's latency: enables ``basis="latency"`` thresholds and
        :meth:`predict_latency`. A group's latency cost is its channels' share of each member layer's time."""
        from prunekit.core.metrics import layer_shapes

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
            if self.layers[name].depthwise:
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


def cost_model(model: nn.Module, groups: list[ChannelGroup], input_size, *, threshold_scale: str = "total",
               group_cap: float = 1.0, table=None, batch: int = 1) -> CostModel:
    """The one way both jobs build a cost model: counts, planning rules, and the latency table when there is one."""
    cost = CostModel.build(model, groups, input_size)
    cost.threshold_scale, cost.group_cap = threshold_scale, group_cap
    if table is not None:
        cost.attach_latency(model, input_size, table, batch=batch)
    return cost


def reduction(cost: CostModel, plan: Plan, measure: CostBasis | str) -> float:
    """Predicted fraction of params, MACs or (table) latency (``measure``) that ``plan`` removes."""
    if measure == "latency":
        return 1 - cost.predict_latency(plan) / cost.dense_latency
    params, macs = cost.predict(plan)
    return 1 - params / cost.dense_params if measure == "params" else 1 - macs / cost.dense_macs
