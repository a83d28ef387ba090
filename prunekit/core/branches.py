"""Depth where width cannot pay: a residual branch removed whole.

On a fast runtime (OpenVINO, and at batch 1 on any) a layer's time is mostly the part that does not shrink with
its channels, so thinning layers buys little and removing them buys much. A residual block computes
``post(branch(x) + shortcut(x))``. When *every* channel of the group that opens its branch is removed (the first
conv's outputs; its BatchNorm and the next conv's inputs go with them), the next conv reads nothing, its output
is its bias (zero), and the rest of the branch maps that constant to a constant per channel: the branch's last
BatchNorm offset. The block is then exactly ``post(shortcut(x) + c)``: :class:`DroppedBranch`, which keeps the
block's shortcut and ``c`` (a buffer) and runs none of the branch's layers. The masked model (those channels
zeroed at the consumers) computes the same thing, so masked == pruned == ONNX holds as for any other plan.

In a plan a dropped branch is its opening group with width 0: :func:`mark_branches` marks the groups that can
take it (a registered block type whose opening group stays inside the branch: ``ChannelGroup.branch`` names
the block), the cost model counts every layer of the branch as gone, the knapsack offers width 0 beside the grid
widths, and :func:`drop_branches` performs it after torch-pruning has removed the other groups' channels (the
constant is computed from the branch as torch-pruning left it). A run folder lists the dropped blocks
(:func:`dropped_blocks`), and loading it drops them again before the weights are read.

A block type is one registration next to its model (:func:`prunekit.models.extensions.register_branch`: a
function that describes a block, or returns None when this block has no residual).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from prunekit.models.extensions import BRANCH_KINDS, BranchSpec


@dataclass(frozen=True)
class Branch:
    block: str  # the residual block's module name
    root: str  # the group that opens the branch (its width 0 drops the branch)
    layers: tuple[str, ...]  # absolute names of the layers that go with it
    spec: BranchSpec


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def describe(block: nn.Module) -> BranchSpec | None:
    fn = BRANCH_KINDS.get(type(block))
    return fn(block) if fn is not None else None


def mark_branches(model: nn.Module, groups) -> int:
    """Mark every group that opens a droppable branch (``group.branch`` = the block's name); returns how many."""
    found = find_branches(model, groups)
    for g in groups:
        g.branch = found[g.root].block if g.root in found else None
    return len(found)


def branch_layers(model: nn.Module, block: str) -> tuple[str, ...]:
    """The absolute names of the layers a dropped ``block`` loses."""
    spec = describe(model.get_submodule(block))
    return tuple(_join(block, n) for n in spec.layers) if spec else ()


def find_branches(model: nn.Module, groups) -> dict[str, Branch]:
    """The residual branches of ``model`` that a plan may drop, by the root of the group that opens each (the
    prunable group holding the opening conv's output channels, whichever layer torch-pruning rooted it at),
    when that group couples nothing outside the branch."""
    opening = {m.module: g for g in groups if g.prunable for m in g.members if m.kind == "out"}
    found = {}
    for name, module in model.named_modules():
        spec = describe(module)
        if spec is None:
            continue
        group = opening.get(_join(name, spec.inner))
        layers = tuple(_join(name, n) for n in spec.layers)
        if group is None or any(m.module not in layers for m in group.members):
            continue
        found[group.root] = Branch(name, group.root, layers, spec)
    return found


class DroppedBranch(nn.Module):
    """A residual block without its branch: ``post(shortcut(x) + const)``."""

    def __init__(self, shortcut: nn.Module | None, channels: int, post: str = "relu"):
        super().__init__()
        self.shortcut = shortcut if shortcut is not None else nn.Identity()
        self.register_buffer("const", torch.zeros(channels))
        self.post = post

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.shortcut(x) + self.const.view(1, -1, *([1] * (x.dim() - 2)))
        return F.relu(y) if self.post == "relu" else y

    def extra_repr(self) -> str:
        return f"channels={self.const.numel()}, post={self.post}"


def _branch_constant(block: nn.Module, spec: BranchSpec) -> torch.Tensor:
    """What the branch outputs per channel when its opening group is gone: the tail run on zeros (eval mode,
    so BatchNorm uses its running statistics, as the delivered model does)."""
    named = dict(block.named_modules())
    first = named[spec.tail[0]]
    channels = first.in_channels if isinstance(first, nn.Conv2d) else first.num_features
    x = torch.zeros(1, channels, 1, 1, dtype=next(block.parameters()).dtype)
    was_training = block.training
    block.eval()
    try:
        with torch.no_grad():
            for n in spec.tail:
                x = named[n](x)
    finally:
        block.train(was_training)
    return x[0, :, 0, 0].detach().clone()


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)


def _dropped_block(block: nn.Module, spec: BranchSpec) -> DroppedBranch:
    const = _branch_constant(block, spec)
    shortcut = block.get_submodule(spec.shortcut) if spec.shortcut else None
    dropped = DroppedBranch(shortcut, const.numel(), spec.post)
    dropped.const.copy_(const)
    return dropped


def drop_branches(model: nn.Module, blocks: list[str]) -> list[str]:
    """Replace each named block of ``model`` (in place) by its :class:`DroppedBranch`; returns the names."""
    for name in blocks:
        block = model.get_submodule(name)
        spec = describe(block)
        if spec is None:
            raise ValueError(f"{name} ({type(block).__name__}) is not a registered residual block")
        _replace(model, name, _dropped_block(block, spec))
    return list(blocks)


def dropped_blocks(model: nn.Module) -> list[str]:
    """The names of the blocks of ``model`` whose branch was dropped (what a run folder records)."""
    return [n for n, m in model.named_modules() if isinstance(m, DroppedBranch)]


def branch_importance(model: nn.Module, groups, criterion: str, batches) -> dict[str, float]:
    """How much each droppable branch matters, relative to the others (mean 1), by the group that opens it:

    - ``ablation``: the KL divergence of the model's outputs from the dense outputs when that branch alone is
      dropped (its opening group masked), on the calibration images;
    - ``share``: the branch's share of its block's output, E‖branch‖² / (E‖branch‖² + E‖shortcut‖²);
    - ``channels``: 1 for every branch (a drop is valued as removing all its channels, by their scores).

    The knapsack values a drop as the opening group's channels times this (:mod:`prunekit.core.allocate`)."""
    roots = {g.root: g for g in groups if g.branch and g.prunable}
    if not roots:
        return {}
    batches = list(batches)
    if criterion == "channels":
        raw = {r: 1.0 for r in roots}
    elif criterion == "ablation":
        raw = _ablation(model, groups, roots, batches)
    elif criterion == "share":
        raw = _share(model, roots, batches)
    else:
        raise ValueError(f"unknown branch criterion {criterion!r}")
    mean = sum(raw.values()) / len(raw)
    return {r: (v / mean if mean > 0 else 1.0) for r, v in raw.items()}


def _ablation(model, groups, roots, batches) -> dict[str, float]:
    from prunekit.core.masking import masked

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            dense = [F.log_softmax(model(x).float(), dim=1) for x in batches]
            out = {}
            for root, g in roots.items():
                total, n = 0.0, 0
                with masked(model, groups, {root: list(range(g.channels))}):
                    for x, ref in zip(batches, dense):
                        logp = F.log_softmax(model(x).float(), dim=1)
                        total += float(F.kl_div(logp, ref, reduction="sum", log_target=True))
                        n += x.shape[0]
                out[root] = max(total / max(n, 1), 0.0) + 1e-6
    finally:
        model.train(was_training)
    return out


def _share(model, roots, batches) -> dict[str, float]:
    named = dict(model.named_modules())
    sums: dict[str, list[float]] = {r: [0.0, 0.0] for r in roots}
    hooks = []
    for root, g in roots.items():
        block = named[g.branch]
        spec = describe(block)
        last = block.get_submodule(spec.tail[-1])
        shortcut = block.get_submodule(spec.shortcut) if spec.shortcut else None
        seen: dict = {}

        def pre(mod, args, seen=seen, shortcut=shortcut):
            x = args[0]
            seen["s"] = shortcut(x) if shortcut is not None else x

        def post(mod, args, out, root=root, seen=seen):
            sums[root][0] += float(out.float().pow(2).sum())
            sums[root][1] += float(seen.pop("s").float().pow(2).sum())
        hooks += [block.register_forward_pre_hook(pre), last.register_forward_hook(post)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for x in batches:
                model(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return {r: b / (b + s) if b + s > 0 else 0.0 for r, (b, s) in sums.items()}
