"""A small single-shot detector on a torchvision backbone, written the way prunekit prunes detectors: the module
returns the **raw head maps** (a class map and a box map per position) and nothing after them — no box decoding,
no NMS, no resizing. Those steps run in your deployment code on the maps (they have no weights to prune and
would hide the network from the tracer); torchvision's own detectors put them inside ``forward``, so wrap their
backbone and heads the same way.

    prunekit prune examples/detector/tiny_detector.py:tiny_detector --input-size 3,128,128 \\
        --data path/to/unlabelled/images --target flops=0.4 --schedule oneshot --finetune-epochs 2 --out runs/det
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torchvision


class TinyDetector(nn.Module):
    """MobileNetV3-small features → a 3×3 conv neck → class logits (A·C channels) and box offsets (A·4) per cell."""

    def __init__(self, num_classes: int = 5, anchors: int = 3):
        super().__init__()
        self.backbone = torchvision.models.mobilenet_v3_small(weights=None).features
        self.neck = nn.Sequential(nn.Conv2d(576, 128, 3, padding=1, bias=False), nn.BatchNorm2d(128), nn.ReLU())
        self.cls_head = nn.Conv2d(128, anchors * num_classes, 1)
        self.box_head = nn.Conv2d(128, anchors * 4, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.neck(self.backbone(x))
        return {"cls": self.cls_head(f), "boxes": self.box_head(f)}


def tiny_detector(num_classes: int | None = None) -> TinyDetector:
    return TinyDetector(num_classes or 5)
