"""Residual branches dropped whole (issue 24, depth where width cannot pay): the block becomes its shortcut plus
the branch's constant, and masked == pruned == reloaded == ONNX holds, for every registered block type; the cost
model counts the branch's layers as gone; the knapsack takes width 0 where the table says a layer's time is its
fixed part; the branch criteria rank branches."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import prunekit
from prunekit.core.branches import (DroppedBranch, branch_importance, dropped_blocks, find_branches,
                                    mark_branches)
from prunekit.core.costmodel import CostModel
from prunekit.core.graph import find_groups
from prunekit.core.trace import build_graph
from prunekit.core.metrics import count_model
from prunekit.core.surgery import apply_plan, verify_masked_equals_pruned
from prunekit.deploy.export import export_onnx
from prunekit.models import resolve_model

# one model per registered block type: CIFAR BasicBlock, CIFAR inverted residual, torchvision BasicBlock /
# Bottleneck / InvertedResidual (at 64² to stay quick)
ARCHS = [("resnet20", None), ("mobilenet_v2", None), ("torchvision:resnet18", (3, 64, 64)),
         ("torchvision:resnet50", (3, 64, 64)), ("torchvision:mobilenet_v2", (3, 64, 64))]


def _model(arch, size):
    torch.manual_seed(0)
    model, spec = resolve_model(arch, input_size=size)
    for m in model.modules():  # non-trivial BatchNorm offsets: the branch constant must be carried exactly
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.bias.data.uniform_(-1, 1)
    model.eval()
    groups = find_groups(model, build_graph(model, spec.input_size), spec.classifier)
    return model, spec, groups


@pytest.mark.parametrize("arch,size", ARCHS)
def test_dropped_branches_are_exact_everywhere(arch, size, tmp_path):
    model, spec, groups = _model(arch, size)
    n = mark_branches(model, groups)
    assert n >= 8 and n == len(find_branches(model, groups))
    opening = [g for g in groups if g.branch]
    other = next(g for g in groups if g.prunable and not g.branch and g.channels >= 32)
    plan = {g.root: list(range(g.channels)) for g in opening[::2]}  # every second branch dropped …
    plan[other.root] = list(range(8))  # … and some width cut elsewhere
    pruned, history = apply_plan(model, groups, plan, spec.input_size)
    assert sorted(dropped_blocks(pruned)) == sorted(g.branch for g in opening[::2])
    x = torch.randn(4, *spec.input_size)
    check = verify_masked_equals_pruned(model, pruned, groups, plan, x)
    assert check["passed"] and check["max_abs_diff"] <= 1e-4
    cost = CostModel.build(model, groups, spec.input_size)  # the counts of the dropped layers are gone
    counted = count_model(pruned, spec.input_size)
    assert cost.predict(plan) == (counted.params, counted.macs) and counted.macs < count_model(
        model, spec.input_size).macs
    prunekit.save_pruned(str(tmp_path / "pruned.pt"), pruned, spec, history)
    reloaded = prunekit.load(str(tmp_path / "pruned.pt"))
    assert dropped_blocks(reloaded) == dropped_blocks(pruned)
    with torch.no_grad():
        assert torch.allclose(reloaded(x), pruned(x), atol=1e-5, rtol=0)
    report = export_onnx(reloaded, x, str(tmp_path / "m.onnx"))
    assert report.passed


def test_a_branch_whose_group_reaches_outside_is_not_droppable():
    model, spec, groups = _model("resnet20", None)
    stream = next(g for g in groups if g.root == "conv1")  # the first stage's residual stream: every block reads it
    assert not stream.branch and mark_branches(model, groups) == 9
    assert all(g.branch == g.root.rsplit(".", 1)[0] for g in groups if g.branch)


def test_the_knapsack_drops_branches_when_a_layers_time_is_its_fixed_part(tmp_path):
    """A table where every conv costs 1 ms whatever its width (OpenVINO-like): thinning saves nothing, so a latency
    cut can only be met by dropping branches; with time proportional to channels, widths are cut instead."""
    from prunekit.core.allocate import knapsack_plan
    from prunekit.core.scoring import score_groups
    from prunekit.deploy.latency_table import LatencyTable

    model, spec, groups = _model("resnet20", None)
    mark_branches(model, groups)
    scores = score_groups(model, groups, "l1")
    for fixed, expect_drops in ((True, True), (False, False)):
        table = LatencyTable(path=str(tmp_path / f"t{fixed}.json"))
        table._measure = (lambda s: 1.0) if fixed else (lambda s: 1e-3 * s.in_c * s.out_c)
        cost = CostModel.build(model, groups, spec.input_size).attach_latency(model, spec.input_size, table)
        plan = knapsack_plan(scores, cost, "latency", 0.2, round_to=8)
        drops = [r for r, idxs in plan.items() if len(idxs) == next(g.channels for g in groups if g.root == r)]
        assert bool(drops) == expect_drops, plan
        assert 1 - cost.predict_latency(plan) / cost.dense_latency >= 0.2


@pytest.mark.parametrize("criterion", ["ablation", "share", "channels"])
def test_branch_criteria_rank_branches(criterion):
    model, spec, groups = _model("resnet20", None)
    mark_branches(model, groups)
    block = model.layer2[1]
    with torch.no_grad():  # one branch made (almost) silent: every measured criterion must rank it last
        block.bn2.weight.mul_(1e-3)
        block.bn2.bias.zero_()
    batches = [torch.randn(16, *spec.input_size)]
    values = branch_importance(model, groups, criterion, batches)
    assert len(values) == 9 and sum(values.values()) == pytest.approx(9)
    if criterion == "channels":
        assert set(values.values()) == {1.0}
    else:
        assert min(values, key=values.get) == "layer2.1.conv1"


def test_dropped_branch_module():
    block = DroppedBranch(None, 3, "relu")
    block.const.copy_(torch.tensor([1.0, -5.0, 0.5]))
    x = torch.zeros(2, 3, 4, 4)
    y = block(x)
    assert y.shape == x.shape and torch.equal(y[:, 1], torch.zeros(2, 4, 4))
    assert torch.equal(y[:, 0], torch.ones(2, 4, 4))
    assert "channels=3" in repr(block)


def test_depth_auto_follows_the_target_and_the_runtime():
    base = dict(model="resnet20", data="random", out="unused", schedule="oneshot")
    assert prunekit.PruneConfig(target="speedup=1.5", runtime="openvino-cpu", **base).drops_branches
    assert not prunekit.PruneConfig(target="flops=0.5", runtime="openvino-cpu", **base).drops_branches
    # measured to cost on onnxruntime int8 (its QDQ graph keeps the constant adds as quantized element-wise ops)
    assert not prunekit.PruneConfig(target="speedup=1.5", runtime="onnxruntime-cpu-int8", **base).drops_branches
    assert prunekit.PruneConfig(target="flops=0.5", depth="on", **base).drops_branches
    with pytest.raises(prunekit.PrunekitError, match="--depth on needs --allocate knapsack"):
        prunekit.PruneConfig(target="flops=0.5", depth="on", allocate="threshold", **base)
