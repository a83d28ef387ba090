"""prunekit's stages called directly: score → masks → prune → verify → export (CIFAR ResNet-20).

    python examples/api_stages.py [path/to/resnet20-cifar10jpeg.pt]
"""
import sys

import torch

from prunekit.deploy.export import export_onnx
from prunekit.core.graph import find_groups
from prunekit.core.trace import build_graph
from prunekit.core.costmodel import CostModel
from prunekit.core.planning import plan_for_target
from prunekit.models import resolve_model
from prunekit.core.scoring import score_groups
from prunekit.core.surgery import apply_plan, verify_masked_equals_pruned

model, spec = resolve_model("resnet20", weights=sys.argv[1] if len(sys.argv) > 1 else None)
groups = find_groups(model, build_graph(model, spec.input_size), spec.classifier)
calib = [torch.randn(64, *spec.input_size) for _ in range(4)]  # use real images for real scores
scores = score_groups(model, groups, "attention-mean", p=1.0, batches=calib)
plan, T = plan_for_target(scores, CostModel.build(model, groups, spec.input_size), measure="macs", amount=0.5)
pruned, history = apply_plan(model, groups, plan, spec.input_size)
print(verify_masked_equals_pruned(model, pruned, groups, plan, calib[0]))
print(export_onnx(pruned, calib[0][:8], "resnet20-half-flops.onnx").checklist())
