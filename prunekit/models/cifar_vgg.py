"""CIFAR VGG-16 with BatchNorm (the paper's CIFAR VGG): 13 conv-BN-ReLU layers, 5 max-pools, linear 512→classes."""
from __future__ import annotations

import torch
import torch.nn as nn

from prunekit.models.registry import register_model

VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class CifarVGG(nn.Module):
    def __init__(self, cfg=VGG16_CFG, num_classes: int = 10):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(in_ch, v, 3, padding=1, bias=False), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                in_ch = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(in_ch, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return self.classifier(x)


@register_model("vgg16_bn", input_size=(3, 32, 32), num_classes=10, classifier="classifier")
def vgg16_bn(num_classes: int = 10) -> CifarVGG:
    """CIFAR VGG-16 with BatchNorm."""
    return CifarVGG(VGG16_CFG, num_classes)
