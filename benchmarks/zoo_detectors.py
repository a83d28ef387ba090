"""The network part of torchvision's detectors, as prunekit prunes them: the backbone (with its FPN where the
detector has one), returning its feature maps as a dict — no resizing, anchors, box decoding or NMS (those run on
the maps afterwards and have no weights to prune). Random init, nothing downloaded."""
from __future__ import annotations

import torch.nn as nn
import torchvision


class Backbone(nn.Module):
    def __init__(self, detector: nn.Module):
        super().__init__()
        self.backbone = detector.backbone

    def forward(self, x):
        out = self.backbone(x)
        return dict(out) if isinstance(out, dict) else {"features": out}


def _factory(name: str):
    def build(num_classes: int | None = None) -> Backbone:
        detector = torchvision.models.get_model(name, weights=None, weights_backbone=None)
        return Backbone(detector)
    build.__name__ = name
    return build


FACTORIES = {n: _factory(n) for n in torchvision.models.list_models(module=torchvision.models.detection)}
globals().update(FACTORIES)
