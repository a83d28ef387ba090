"""Filter importance criteria, one score per channel of every prunable group.

Registry (``CRITERIA``): ``attention-mean``, ``attention-max``, ``attention-sum`` (METHOD.md §1, power ``p``),
``l1``, ``l2`` (weight norms of the producing layers), ``group-norm`` (torch-pruning's group magnitude over the
whole dependency group), ``random``.

**Where the attention is measured.** The statistic of a channel is taken on the tensor the *next layer
reads*: a forward pre-hook on every consumer (the conv / linear / shortcut whose input channels belong to the
group) sees the post-activation output, whether the activation is a module (``nn.ReLU``) or functional
(``F.relu``), and after pooling where a pool sits in between. Where there is no activation (a linear
bottleneck such as MobileNetV2's projection conv, or a residual stream read before its ReLU) the statistic
is ``|a|^p`` of the BatchNorm output, i.e. of what the next layer reads. One pass over the calibration
images accumulates running sums for all layers at once; no feature map is stored.

**Combining a group.** Each member's per-channel values are divided by their mean over the group's
channels (so layers of different magnitude count equally), then averaged over the members: consumers for
attention, producing convs/linears for weight norms. The final score has mean 1 within each group: a
channel with score 0.5 is half as active as the group's average channel.
"""
from __future__ import annotations

import contextlib

from dataclasses import dataclass
from collections.abc import Callable, Iterable

import numpy as np
import torch
import torch.nn as nn

from prunekit.errors import PrunekitError
from prunekit.core.graph import ChannelGroup


@dataclass(frozen=True)
class Criterion:
    """One way to value a group's channels: :meth:`values` gives, per prunable group, each member module's value
    of every root channel (higher = keep); :func:`score_groups` scales and averages them. One object per
    criterion (as Torch-Pruning's ``Importance``): nothing dispatches on which criterion it is."""
    name: str
    fn: Callable | None = None
    scaled: bool = True  # has a fixed per-module reference scale across search rounds (score_scales)

    def values(self, model: nn.Module, groups: list[ChannelGroup], p: float, batches, compute,
               seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
        raise NotImplementedError

    def check(self, p: float) -> None:
        """Refuse options this criterion cannot use."""


class Attention(Criterion):
    """The paper's attention statistic of each channel of a consumer's input (post-activation), per image."""

    def check(self, p: float) -> None:
        if p <= 0:
            raise PrunekitError(f"attention power p must be positive, got {p}")

    def values(self, model, groups, p, batches, compute, seed=0):
        if batches is None:
            raise PrunekitError(f"criterion {self.name} needs calibration images")
        named = dict(model.named_modules())
        consumers = {m.module for g in groups for m in g.consumers(named)}
        stats = consumer_statistics(model, consumers, batches, self.fn, p, compute)
        return {g.root: {m.module: _per_root(stats[m.module], m.idxs, m.root_idxs, g.channels)
                         for m in g.consumers(named) if m.module in stats} for g in groups}


class WeightNorm(Criterion):
    """A norm of each producing conv / linear layer's filter."""

    def values(self, model, groups, p, batches, compute, seed=0):
        named = dict(model.named_modules())
        out: dict[str, dict[str, np.ndarray]] = {}
        for g in groups:
            out[g.root] = {}
            for m in g.members:
                mod = named[m.module]
                if m.kind == "out" and isinstance(mod, (nn.Conv2d, nn.Linear)):
                    w = self.fn(mod.weight.detach().float()).cpu().numpy().astype(np.float64)
                    out[g.root][m.module] = _per_root(w, m.idxs, m.root_idxs, g.channels)
        return out


class GroupNorm(Criterion):
    """Torch-Pruning's group importance: the L2 norm over every weight the channel's whole dependency group
    touches (producers, BatchNorm, consumers), the "group-norm" baseline of its DepGraph paper."""

    def values(self, model, groups, p, batches, compute, seed=0):
        return _group_norms(model, groups, batches)


class RandomScores(Criterion):
    """Random values (a baseline): seeded, no reference scale."""

    def values(self, model, groups, p, batches, compute, seed=0):
        rng = np.random.default_rng(seed)
        return {g.root: {g.root: rng.random(g.channels) + 1e-6} for g in groups}


CRITERIA: dict[str, Criterion] = {}
_KINDS = {"attention": Attention, "weight": WeightNorm}


def register_criterion(name: str, kind: str):
    """``@register_criterion(name, "attention" | "weight")`` on a function: ``fn(x (N, C, …), p) -> (N, C)``
    for attention statistics of a consumer's input, ``fn(weight) -> (C,)`` for a filter norm."""
    def wrap(fn):
        CRITERIA[name] = _KINDS[kind](name, fn)
        return fn
    return wrap


# ---- per-image channel statistics of a consumer's input: x (N, C, ...) -> (N, C) -------------------------
@register_criterion("attention-mean", "attention")
def attention_mean(x: torch.Tensor, p: float) -> torch.Tensor:
    return x.abs().pow(p).flatten(2).mean(2) if x.dim() > 2 else x.abs().pow(p)


@register_criterion("attention-max", "attention")
def attention_max(x: torch.Tensor, p: float) -> torch.Tensor:
    return x.abs().pow(p).flatten(2).amax(2) if x.dim() > 2 else x.abs().pow(p)


@register_criterion("attention-sum", "attention")
def attention_sum(x: torch.Tensor, p: float) -> torch.Tensor:
    return x.abs().pow(p).flatten(2).sum(2) if x.dim() > 2 else x.abs().pow(p)


@register_criterion("l1", "weight")
def l1_norm(w: torch.Tensor) -> torch.Tensor:
    return w.abs().flatten(1).sum(1)


@register_criterion("l2", "weight")
def l2_norm(w: torch.Tensor) -> torch.Tensor:
    return w.pow(2).flatten(1).sum(1).sqrt()


CRITERIA["random"] = RandomScores("random", scaled=False)
CRITERIA["group-norm"] = GroupNorm("group-norm")


def get_criterion(name: str) -> Criterion:
    if name not in CRITERIA:
        raise PrunekitError(f"unknown criterion {name!r}; choose one of {', '.join(sorted(CRITERIA))}")
    return CRITERIA[name]


def consumer_statistics(model: nn.Module, modules: Iterable[str], batches: Iterable[torch.Tensor],
                        stat: Callable, p: float, compute=None) -> dict[str, np.ndarray]:
    """Mean over all calibration images of ``stat`` of each listed module's input, per input channel (fp32,
    on ``compute``'s device: a :class:`prunekit.compute.Compute`, passed in — anything with ``device``,
    ``memory_format`` and ``placed(model)``; None runs where the model is)."""
    named = dict(model.named_modules())
    sums: dict[str, torch.Tensor] = {}
    count = 0

    def make_hook(name):
        def hook(mod, args):
            x = args[0].detach()
            if x.dim() == 3:  # (N, tokens, C) for a Linear on sequences: channels last
                x = x.transpose(1, 2)
            s = stat(x.float(), p).sum(0)
            sums[name] = s if name not in sums else sums[name] + s
        return hook

    hooks = [named[n].register_forward_pre_hook(make_hook(n)) for n in set(modules)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), (compute.placed(model) if compute is not None else contextlib.nullcontext()):
            for x in batches:
                if compute is not None:
                    x = x.to(compute.device, non_blocking=True).contiguous(memory_format=compute.memory_format)
                model(x)
                count += x.shape[0]
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    if count == 0:
        raise PrunekitError("no calibration images")
    return {n: (s / count).cpu().numpy().astype(np.float64) for n, s in sums.items()}


def _per_root(values: np.ndarray, idxs: list[int], root_idxs: list[int], channels: int) -> np.ndarray:
    """Average a member's per-index values onto the group's root channels (flatten maps one root to many)."""
    total = np.zeros(channels)
    n = np.zeros(channels)
    np.add.at(total, root_idxs, values[idxs])
    np.add.at(n, root_idxs, 1)
    return total / np.maximum(n, 1)


def _normalise(v: np.ndarray) -> np.ndarray:
    mean = v.mean()
    return v / mean if mean > 0 else np.ones_like(v)


def score_groups(model: nn.Module, groups: list[ChannelGroup], criterion: str = "attention-mean", p: float = 1.0,
                 batches: Iterable[torch.Tensor] | None = None, seed: int = 0,
                 reference: dict[str, float] | None = None, compute=None) -> dict[str, np.ndarray]:
    """Score every prunable group: root conv name → scores of its channels.

    Each member's per-channel values are divided by a reference scale and averaged over the members. By
    default the reference is the member's own mean over the group (scores then have mean 1 per group).
    ``reference`` (from :func:`score_scales` on the dense model) fixes the scale across pruning rounds, so a
    threshold T means the same thing in every round: a channel's score is its activity relative to the
    dense layer's average channel.
    """
    crit = get_criterion(criterion)
    crit.check(p)
    prunable = [g for g in groups if g.prunable]
    raw = crit.values(model, prunable, p, batches, compute, seed)
    if not crit.scaled:
        reference = None
    scores = {}
    for g in prunable:
        parts = []
        for module, values in raw[g.root].items():
            scale = reference.get(module) if reference else None
            scale = scale if scale else values.mean()
            parts.append(values / scale if scale > 0 else np.ones_like(values))
        if not parts:
            scores[g.root] = np.ones(g.channels)
        else:
            mean = np.mean(parts, axis=0)
            scores[g.root] = by_stripe(g, mean if reference else _normalise(mean))
    return scores


def by_stripe(group: ChannelGroup, scores: np.ndarray) -> np.ndarray:
    """A striped group's scores (a grouped conv's channels, :class:`~prunekit.core.graph.ChannelGroup`): each
    channel gets its stripe's mean, plus a tie-break far below any real difference that orders equal stripes
    (dead ones at 0 included) by their number, so that "lowest scores first" always takes whole stripes."""
    if group.unit <= 1 or group.stripes is None:
        return scores
    stripes = np.asarray(group.stripes)
    mean = np.bincount(stripes, weights=scores) / np.maximum(np.bincount(stripes), 1)
    eps = 1e-9 * (float(np.abs(mean).max()) or 1.0) / max(len(mean), 1)
    return mean[stripes] + eps * stripes


def score_scales(model: nn.Module, groups: list[ChannelGroup], criterion: str, p: float = 1.0,
                 batches: Iterable[torch.Tensor] | None = None, compute=None) -> dict[str, float]:
    """Per member module: its mean value over the group's channels (the fixed reference scale of a search)."""
    crit = get_criterion(criterion)
    if not crit.scaled:
        return {}
    raw = crit.values(model, [g for g in groups if g.prunable], p, batches, compute)
    return {module: float(v.mean()) for per_group in raw.values() for module, v in per_group.items()}


def _group_norms(model: nn.Module, groups: list[ChannelGroup], batches) -> dict[str, dict[str, np.ndarray]]:
    """torch-pruning's ``GroupMagnitudeImportance(p=2)`` of every channel of each group (one value per root
    channel; the graph is traced on the shape of the first calibration batch)."""
    import torch_pruning as tp

    from prunekit.core.trace import build_graph

    if batches is None:
        raise PrunekitError("criterion group-norm needs an example input (calibration images)")
    x = next(iter(batches))
    dg = build_graph(model, tuple(x.shape[1:]))
    named = dict(model.named_modules())
    importance = tp.importance.GroupMagnitudeImportance(p=2)
    out = {}
    for g in groups:
        module = named[g.root]
        group = dg.get_pruning_group(module, dg.get_pruner_of_module(module).prune_out_channels,
                                     list(range(g.channels)))
        out[g.root] = {g.root: importance(group).detach().double().cpu().numpy()}
    return out
