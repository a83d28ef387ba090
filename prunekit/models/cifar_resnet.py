"""CIFAR ResNet-20/32/44/56/110 (He et al. 2016) with the parameter-free option-A shortcut.

The layout and state-dict keys match the classic CIFAR implementation (conv1, bn1, layer{1,2,3}.{b}.conv{1,2},
bn{1,2}, linear), so the shared weights load with ``strict=True``. Activations are functional ``F.relu`` as in
the original code.

The option-A shortcut (stride-2 subsample, zero-padded on the channel axis) is the module
:class:`OptionAShortcut`, not a lambda, so torch-pruning can treat it as one node with the custom pruner
registered below: that makes the residual stream prunable exactly.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch_pruning as tp

from prunekit.models.extensions import BranchSpec, register_branch, register_pruner
from prunekit.models.registry import register_model


class OptionAShortcut(nn.Module):
    """Option-A shortcut: ``F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, pad, pad))`` as one exact operation.

    It is computed as a stride-2 1×1 convolution with a fixed 0/1 selection matrix (``select``, a
    non-persistent buffer, so original weight files still load strictly): output channel j copies input
    channel i where ``select[j, i] == 1`` and is zero where its row is all zeros. One multiply by 1 and
    additions of exact zeros make it bit-exact to the padded slice. Being a single autograd op lets
    torch-pruning see it as one node; the pruner registered below removes rows (output
    channels) and columns (input channels), which keeps the pruned shortcut exact as well.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 2):
        super().__init__()
        pad = (out_channels - in_channels) // 2
        select = torch.zeros(out_channels, in_channels, 1, 1)
        select[torch.arange(in_channels) + pad, torch.arange(in_channels)] = 1.0
        self.stride = stride
        self.register_buffer("select", select, persistent=False)

    @property
    def in_channels(self) -> int:
        return int(self.select.shape[1])

    @property
    def out_channels(self) -> int:
        return int(self.select.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.select.to(x.dtype), stride=self.stride)

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, out_channels={self.out_channels}, stride={self.stride}"


class OptionAShortcutPruner(tp.pruner.BasePruningFunc):
    """Removes rows (output channels) / columns (input channels) of the shortcut's selection matrix.

    ``prune_out_channels`` differs from ``prune_in_channels``, so torch-pruning keeps the shortcut's input
    and output channels in different groups (the residual streams of two stages). Removing input channel i
    leaves output channel pad+i as a zero channel: exactly what zeroing channel i at the input does.
    """

    def prune_out_channels(self, layer: OptionAShortcut, idxs):
        keep = [i for i in range(layer.out_channels) if i not in set(idxs)]
        layer.select = layer.select[keep].contiguous()
        return layer

    def prune_in_channels(self, layer: OptionAShortcut, idxs):
        keep = [i for i in range(layer.in_channels) if i not in set(idxs)]
        layer.select = layer.select[:, keep].contiguous()
        return layer

    def get_out_channels(self, layer: OptionAShortcut):
        return layer.out_channels

    def get_in_channels(self, layer: OptionAShortcut):
        return layer.in_channels


register_pruner(OptionAShortcut, OptionAShortcutPruner())


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride != 1 or in_planes != planes:
            self.shortcut: nn.Module = OptionAShortcut(in_planes, planes, stride)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


register_branch(BasicBlock, lambda block: BranchSpec(
    inner="conv1", layers=("conv1", "bn1", "conv2", "bn2"), tail=("conv2", "bn2"), shortcut="shortcut", post="relu"))


class CifarResNet(nn.Module):
    def __init__(self, num_blocks: int, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        in_planes = 16
        for stage, planes in enumerate((16, 32, 64), start=1):
            blocks = []
            for b in range(num_blocks):
                stride = 2 if (stage > 1 and b == 0) else 1
                blocks.append(BasicBlock(in_planes, planes, stride))
                in_planes = planes
            setattr(self, f"layer{stage}", nn.Sequential(*blocks))
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def _make(depth: int):
    n = (depth - 2) // 6

    def factory(num_classes: int = 10) -> CifarResNet:
        return CifarResNet(n, num_classes)

    factory.__name__ = f"resnet{depth}"
    factory.__doc__ = f"CIFAR ResNet-{depth} ({n} BasicBlocks per stage, option-A shortcuts)."
    return factory


for _depth in (20, 32, 44, 56, 110):
    register_model(f"resnet{_depth}", input_size=(3, 32, 32), num_classes=10, classifier="linear")(_make(_depth))
