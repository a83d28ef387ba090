"""What a model family tells the pruner, registered beside the model: a torch-pruning pruner for a layer type
of its own (:func:`register_pruner`) and the residual blocks whose branch a plan may drop
(:func:`register_branch`). ``prunekit.core`` reads these registries when it builds a dependency graph and when
it looks for branches; a model module never imports ``core`` (the flow runs models → core, one way).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch.nn as nn

# layer type -> its torch-pruning pruner (a ``tp.pruner.BasePruningFunc``), and which of those types take input
# channels from a group (consumers); conv, linear and BatchNorm need no registration
PRUNERS: dict[type, object] = {}
CONSUMERS: set[type] = set()


def register_pruner(module_type: type, pruner, consumer: bool = True) -> None:
    """Let torch-pruning prune ``module_type`` with ``pruner`` and treat it as an exact group member (and, with
    ``consumer``, as a layer whose input channels a group touches)."""
    PRUNERS[module_type] = pruner
    if consumer:
        CONSUMERS.add(module_type)


@dataclass(frozen=True)
class BranchSpec:
    """A residual block's branch, by the block's own (relative) module names."""
    inner: str  # a layer whose output channels open the branch: all removed → the branch is constant
    layers: tuple[str, ...]  # every conv / BatchNorm of the branch (removed with it)
    tail: tuple[str, ...]  # the modules after the opening group, in order: zeros in → the branch's constant out
    shortcut: str | None  # the shortcut module (None: identity)
    post: str = "relu"  # what follows the add: "relu" or "none"


BRANCH_KINDS: dict[type, Callable[[nn.Module], BranchSpec | None]] = {}


def register_branch(block_type: type, describe: Callable[[nn.Module], BranchSpec | None]) -> None:
    """Let blocks of ``block_type`` lose their residual branch; ``describe(block)`` names its parts (None: this
    block has no residual, e.g. an inverted residual that changes the shape)."""
    BRANCH_KINDS[block_type] = describe


# layer type -> a function that rewrites a pruned instance's own channel bookkeeping (split sizes, widths) from its
# pruned children: a module whose forward splits its input with sizes it keeps (timm's MixedConv2d)
SPLIT_OWNERS: dict[type, Callable[[nn.Module], None]] = {}


def register_split_owner(module_type: type, sync: Callable[[nn.Module], None]) -> None:
    """Let groups prune through the fixed-size ``torch.split`` inside ``module_type``'s forward, when the split's
    every chunk goes straight into one of its children: after the surgery ``sync(module)`` rewrites the sizes it
    splits with from its pruned children (the exact alternative to freezing those groups)."""
    SPLIT_OWNERS[module_type] = sync
