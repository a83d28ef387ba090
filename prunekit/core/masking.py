"""Masking a plan without surgery: pruned channels zeroed at the input of every consumer (the next conv / linear /
shortcut), i.e. after BatchNorm and activation. There, the masked dense model computes exactly what the
physically pruned model computes (zeroing at the conv output would not be exact, the BatchNorm shift would leak
through): the reference that masked == pruned is proven against (:mod:`prunekit.core.surgery`).
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn as nn

from prunekit.core.costmodel import Plan
from prunekit.core.graph import ChannelGroup


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
