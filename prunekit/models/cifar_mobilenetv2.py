"""CIFAR MobileNetV2 (stride-1 stem and first stages for 32×32 inputs), as used for CIFAR-10 in the paper.

Inverted residual blocks: 1×1 expand → BN → ReLU6, 3×3 depthwise → BN → ReLU6, 1×1 project → BN (linear
bottleneck, no activation), identity residual when shapes match.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from prunekit.models.extensions import BranchSpec, register_branch
from prunekit.models.registry import register_model

# (expansion, out_channels, blocks, stride)
CFG = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expansion: int):
        super().__init__()
        hidden = cin * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(_conv_bn(cin, hidden, 1))
        layers += [_conv_bn(hidden, hidden, 3, stride, groups=hidden), _conv_bn(hidden, cout, 1, act=False)]
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


def _branch(block: InvertedResidual) -> BranchSpec | None:
    """The residual branch of an expanding block with an identity shortcut (its expand conv opens it)."""
    if not block.use_residual or len(block.conv) != 3:
        return None
    return BranchSpec(inner="conv.0.0", layers=("conv.0.0", "conv.0.1", "conv.1.0", "conv.1.1", "conv.2.0", "conv.2.1"),
                      tail=("conv.2.0", "conv.2.1"), shortcut=None, post="none")


register_branch(InvertedResidual, _branch)


class CifarMobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 10, last_channels: int = 1280):
        super().__init__()
        layers: list[nn.Module] = [_conv_bn(3, 32, 3, 1)]
        cin = 32
        for t, c, n, s in CFG:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(_conv_bn(cin, last_channels, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(last_channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


@register_model("mobilenet_v2", input_size=(3, 32, 32), num_classes=10, classifier="classifier")
def mobilenet_v2(num_classes: int = 10) -> CifarMobileNetV2:
    """CIFAR MobileNetV2."""
    return CifarMobileNetV2(num_classes)
