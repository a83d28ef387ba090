"""Coupled channel groups from torch-pruning's dependency graph.

A :class:`ChannelGroup` is a set of channels that must be kept or removed together: a conv's output
channels plus everything tied to them (its BatchNorm, the input channels of every consumer, the other
convs feeding the same residual add, the depthwise conv of an inverted residual, slices of a concatenation,
the flattened features of a classifier). Groups are found once on the dense model; each member records
which channel indices of which module it owns, aligned to the group's root channels.

A group whose channels pass through a grouped (non-depthwise) conv is pruned in *stripes*: one channel of every
conv group together (the same position in each), so that every group keeps as many channels as the others and
the conv stays grouped (``unit`` = the number of conv groups, ``stripes`` = each root channel's stripe). A group in
which torch-pruning maps one layer channel to two root channels (a Ghost module's channel and its depthwise copy)
is striped the same way, the two removed together.

A group is *frozen* (never pruned) when removing its channels would not be exact or torch-pruning cannot
do it safely: it touches the classifier's outputs, grouped convs that disagree on the stripes, a normalisation other
than BatchNorm (e.g. ConvNeXt's channel LayerNorm), a bare ``nn.Parameter``, or a split / slice whose sizes the
model's code fixes (a CSP block's ``x.split(c // 2)``; a registered split owner's are rewritten instead), a reshape
that moves channels between axes (a channel shuffle), or copies that do not pair evenly. Its ``reason`` says
which layer.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch.nn as nn
import torch_pruning as tp

from prunekit.core.outputs import output_layers
from prunekit.errors import PrunekitError
from prunekit.core.trace import memory_limit, owned_splits, time_limit
from prunekit.models.extensions import CONSUMERS, PRUNERS

# Modules whose channels a group may own exactly, and those whose *input* channels a group touches; a model
# family with a module of its own registers a pruner for it next to the model
# (:func:`prunekit.models.extensions.register_pruner`), read here when a graph is built.
BASE_MEMBER_TYPES: tuple = (nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d)
BASE_CONSUMER_TYPES: tuple = (nn.Conv2d, nn.Linear)


def exact_member_types() -> tuple:
    return (*BASE_MEMBER_TYPES, *PRUNERS)


def consumer_types() -> tuple:
    return (*BASE_CONSUMER_TYPES, *CONSUMERS)


@dataclass
class Member:
    """One module's share of a group: ``idxs[k]`` of ``module`` belongs to root channel ``root_idxs[k]``."""

    module: str
    kind: str  # "out" (output channels / features) or "in" (input channels)
    idxs: list[int]
    root_idxs: list[int]


@dataclass
class ChannelGroup:
    root: str  # conv whose output channels define the group (and its channel numbering)
    channels: int
    members: list[Member] = field(default_factory=list)
    reason: str | None = None  # why the group is frozen; None = prunable
    branch: str | None = None  # the residual block whose branch this group opens (width 0 drops it), if any
    unit: int = 1  # channels removed together: the conv groups of a grouped conv the channels pass through
    stripes: list[int] | None = None  # each root channel's stripe (unit > 1): a stripe is removed whole

    @property
    def prunable(self) -> bool:
        return self.reason is None and self.channels > self.unit

    def consumers(self, model_modules: dict[str, nn.Module]) -> list[Member]:
        return [m for m in self.members if m.kind == "in" and isinstance(model_modules[m.module], consumer_types())]


def _member_reason(module: nn.Module, name: str, kind: str, classifier: str | None) -> str | None:
    if name == classifier and kind == "out":
        return f"it reaches the classifier's outputs ({name})"
    if not isinstance(module, exact_member_types()):
        return f"{name} ({type(module).__name__}) cannot be pruned exactly"
    return None


# functional ops whose channel counts are constants in the model's code: the surgery cannot change them, so a
# group whose channels pass through one would leave a split / slice that no longer matches its input (a CSP
# block's split halves feeding a residual add, timm's cspnet), and the pruned model would not run
_FIXED_SIZE_OPS = {tp.ops._SplitOp: "split (torch.split / chunk)", tp.ops._SliceOp: "slice",
                   tp.ops._UnbindOp: "unbind"}


def _op_reason(op, owned: set[int] = frozenset(), movers: set[int] = frozenset()) -> str | None:
    if id(op) in owned:
        return None
    if id(op) in movers:
        return (f"its channels go through a reshape that moves channels between axes ({op!r}, e.g. a channel "
                "shuffle): removing some would reorder the rest")
    for kind, words in _FIXED_SIZE_OPS.items():
        if isinstance(op, kind):
            return (f"its channels go through a {words} whose sizes are fixed in the model's code "
                    f"({op!r}): pruning them would change what it returns")
    return None


def find_groups(model: nn.Module, dg: tp.DependencyGraph, classifier: str | None,
                timeout: float = 300.0, input_size: tuple[int, ...] | None = None) -> list[ChannelGroup]:
    """All conv-rooted channel groups of ``model``, frozen ones included (with their reason). With
    ``input_size``, every group whose channels a model output exposes (a segmentation head's class map, a
    detector's box map, any output of a tuple or dict) is frozen, naming the output."""
    names = {m: n for n, m in model.named_modules()}
    clf = dict(model.named_modules()).get(classifier) if classifier else None
    groups: list[ChannelGroup] = []
    owned = owned_splits(model, dg)
    try:
        with time_limit(timeout, "torch-pruning's group search"), memory_limit("torch-pruning's group search"):
            for g in dg.get_all_groups(ignored_layers=[clf] if clf is not None else [],
                                       root_module_types=(nn.Conv2d,)):
                groups.append(_to_channel_group(g, dg, names, classifier, owned, getattr(dg, "channel_movers", set())))
    except PrunekitError:
        raise
    except Exception as e:
        raise PrunekitError(
            f"torch-pruning failed while grouping channels: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
        ) from e
    if input_size is not None:
        freeze_outputs(groups, output_layers(model, input_size))
    return groups


def freeze_outputs(groups: list[ChannelGroup], outputs: dict[str, str]) -> None:
    """Freeze every group whose output channels include a layer an output exposes (``outputs``: layer → output)."""
    for g in groups:
        hit = next((m.module for m in g.members if m.kind == "out" and m.module in outputs), None)
        if hit is not None and g.reason is None:
            g.reason = f"its channels are the model's output {outputs[hit]!r} (made by {hit})"


def _to_channel_group(g, dg, names, classifier, owned: set[int] = frozenset(),
                      movers: set[int] = frozenset()) -> ChannelGroup:
    root_module = g[0].dep.target.module
    group = ChannelGroup(root=names[root_module], channels=len(g[0].idxs))
    seen: dict[tuple[str, str], dict[int, int]] = {}
    grouped: list = []  # (grouped conv, its member)
    copies: list[tuple[int, int]] = []  # root channels one removal takes together (a Ghost module's copies)
    for item in g.items:
        dep, idxs = item.dep, item.idxs
        target = dep.target.module
        if isinstance(target, nn.Parameter):
            group.reason = group.reason or f"a bare parameter ({dg._param_to_name.get(target, '?')}) is coupled"
            continue
        name = names.get(target)
        if name is None:  # a functional op (add, cat, flatten, ...): carries indices, owns nothing
            group.reason = group.reason or _op_reason(target, owned, movers)
            continue
        kind = "out" if dg.is_out_channel_pruning_fn(dep.handler) else "in"
        mapping = dict(zip(map(int, idxs), map(int, item.root_idxs)))
        if (name, kind) in seen:  # reached twice: a channel it maps to two root channels couples those two
            first = seen[(name, kind)]
            copies += [(first[k], r) for k, r in mapping.items() if k in first and first[k] != r]
            continue
        seen[(name, kind)] = mapping
        group.reason = group.reason or _member_reason(target, name, kind, classifier)
        member = Member(name, kind, [int(i) for i in idxs], [int(r) for r in item.root_idxs])
        group.members.append(member)
        if _is_grouped(target):
            grouped.append((target, member))
    copies += _copies(g, dg)
    if copies:  # removed together, as stripes (not combined with a grouped conv's stripes)
        group.reason = group.reason or (_pair_stripes(group, copies) if not grouped else COPIES)
    else:
        group.reason = group.reason or _stripe(group, grouped)
    return group


COPIES = ("torch-pruning maps some layer's channels to two root channels of this group (a layer reached twice: a "
          "concatenation with a depthwise copy of itself as in a Ghost module, or paths stacked and reshaped as in a "
          "selective-kernel block) in sets that are not all the same size, so they cannot be removed together: "
          "removal would not be exact")


def _pair_stripes(group: ChannelGroup, copies: list[tuple[int, int]]) -> str | None:
    """Make the root channels that one removal takes together (``copies``: a channel and its depthwise copy,
    which torch-pruning maps to two root channels) the group's stripes, so a plan removes them together; the
    reason to freeze the group when those sets are not all the same size."""
    parent = list(range(group.channels))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in copies:
        if not (0 <= a < group.channels and 0 <= b < group.channels):
            return COPIES
        parent[find(a)] = find(b)
    roots = [find(i) for i in range(group.channels)]
    sizes = np.bincount(roots, minlength=group.channels)
    unit = int(sizes[roots[0]])
    if unit < 2 or any(sizes[r] != unit for r in roots):
        return COPIES
    number = {r: n for n, r in enumerate(dict.fromkeys(roots))}
    group.unit, group.stripes = unit, [number[r] for r in roots]
    return None


def _is_grouped(module) -> bool:
    return isinstance(module, nn.Conv2d) and module.groups > 1 and not (
        module.groups == module.in_channels == module.out_channels)


def _stripe(group: ChannelGroup, grouped: list) -> str | None:
    """Set ``group.unit`` / ``group.stripes`` from the grouped convs its channels pass through; the reason to
    freeze it when they do not agree on one arrangement (or do not cover every channel of the group)."""
    stripes = None
    for conv, m in grouped:
        dim = conv.in_channels if m.kind == "in" else conv.out_channels
        per = dim // conv.groups
        mine = [-1] * group.channels
        for i, r in zip(m.idxs, m.root_idxs):
            if 0 <= r < group.channels:
                mine[r] = i % per
        counts = np.bincount([s for s in mine if s >= 0], minlength=per)
        if -1 in mine or len(m.idxs) != group.channels or not (counts == conv.groups).all() or (
                stripes is not None and (mine != stripes or conv.groups != group.unit)):
            return (f"grouped convolution {m.module} (groups={conv.groups}): its conv groups cannot all keep the "
                    "same number of channels under this group's couplings")
        stripes, group.unit = mine, conv.groups
    group.stripes = stripes
    return None


def _copies(g, dg) -> list[tuple[int, int]]:
    """Pairs of root channels that are one producer channel reached twice: a channel op (elementwise, concat) whose
    input channel k maps to another root channel than its own channel k does (torch-pruning reached the producer
    through a depthwise copy of it first, a Ghost module, and kept that mapping)."""
    maps: dict[int, dict[int, int]] = {}
    for item in g.items:
        if dg.is_out_channel_pruning_fn(item.dep.handler):
            maps.setdefault(id(item.dep.target), {}).update(zip(map(int, item.idxs), map(int, item.root_idxs)))
    pairs = []
    for item in g.items:
        node = item.dep.target
        if isinstance(node.module, tp.ops._ElementWiseOp):
            offsets = [0] * len(node.inputs)
        elif isinstance(node.module, tp.ops._ConcatOp) and node.module.offsets:
            offsets = list(node.module.offsets)
        else:
            continue
        own = dict(zip(map(int, item.idxs), map(int, item.root_idxs)))
        for i, inp in enumerate(node.inputs):
            produced, off = maps.get(id(inp)) or {}, offsets[i] if i < len(offsets) else 0
            pairs += [(r, produced[k - off]) for k, r in own.items() if k >= off and produced.get(k - off, r) != r]
    return pairs


def frozen_summary(groups: list[ChannelGroup]) -> list[str]:
    return [f"{g.root}: {g.reason}" for g in groups if g.reason]
