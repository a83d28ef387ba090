"""Scores on the right tensors, layer-aware thresholds, one-shot target search, exact masking."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from prunekit.errors import PrunekitError
from prunekit.core.graph import find_groups
from prunekit.core.trace import build_graph
from prunekit.core.costmodel import CostModel, reduction
from prunekit.core.planning import aligned_keep, layer_thresholds, plan_for_target, plan_for_threshold
from prunekit.core.masking import masked
from prunekit.core.metrics import count_model
from prunekit.models import resolve_model
from prunekit.core.scoring import CRITERIA, score_groups
from prunekit.core.surgery import apply_plan


@pytest.fixture(scope="module")
def r20():
    torch.manual_seed(0)
    model, spec = resolve_model("resnet20")
    for m in model.modules():  # non-trivial BN statistics so that channels differ
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.2, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    groups = find_groups(model, build_graph(model, spec.input_size), spec.classifier)
    return model, spec, groups


def test_registry():
    assert {"attention-mean", "attention-max", "attention-sum", "l1", "l2", "group-norm", "random"} <= set(CRITERIA)


@pytest.mark.parametrize("criterion,p,reduce", [("attention-mean", 1, "mean"), ("attention-mean", 2, "mean"),
                                                ("attention-max", 1, "max"), ("attention-sum", 1, "sum")])
def test_attention_is_taken_after_the_functional_relu(r20, criterion, p, reduce):
    """Block-internal channels: the statistic of F.relu(bn1(conv1(x))), averaged over all batches."""
    model, spec, groups = r20
    batches = [torch.randn(6, 3, 32, 32) for _ in range(3)]
    scores = score_groups(model, groups, criterion, p, batches)
    block = model.layer2[1]
    captured = []
    h = block.register_forward_pre_hook(lambda mod, args: captured.append(args[0]))
    with torch.no_grad():
        for x in batches:
            model(x)
    h.remove()
    with torch.no_grad():
        a = torch.cat([F.relu(block.bn1(block.conv1(x))) for x in captured]).abs().pow(p).flatten(2)
    stat = {"mean": a.mean(2), "max": a.amax(2), "sum": a.sum(2)}[reduce].mean(0).double().numpy()
    expected = stat / stat.mean()
    np.testing.assert_allclose(scores["layer2.1.conv1"], expected, rtol=1e-4)


def test_weight_norm_scores(r20):
    model, _, groups = r20
    scores = score_groups(model, groups, "l1")
    w = model.layer3[2].conv1.weight.detach().abs().sum((1, 2, 3)).double().numpy()
    np.testing.assert_allclose(scores["layer3.2.conv1"], w / w.mean(), rtol=1e-6)


def test_every_group_has_mean_one(r20):
    model, _, groups = r20
    for crit in ("attention-mean", "l2", "random"):
        scores = score_groups(model, groups, crit, 1.0, [torch.randn(4, 3, 32, 32)])
        assert len(scores) == sum(g.prunable for g in groups) == 12
        for s in scores.values():
            assert s.mean() == pytest.approx(1.0)


def test_unknown_criterion(r20):
    model, _, groups = r20
    with pytest.raises(PrunekitError, match="unknown criterion"):
        score_groups(model, groups, "taylor")


def test_layer_thresholds_scale_with_group_size(r20):
    model, spec, groups = r20
    cost = CostModel.build(model, groups, spec.input_size)
    roots = [g.root for g in groups if g.prunable]
    th = layer_thresholds(cost, roots, 0.3, "params")
    assert np.mean(list(th.values())) == pytest.approx(0.3)
    # a stage-3 internal group (64 ch, 2 × 64·64·9 weights) gets a higher threshold than a stage-1 one
    assert th["layer3.1.conv1"] > th["layer1.1.conv1"] * 10
    ratio = cost.group_params["layer3.1.conv1"] / cost.group_params["layer1.1.conv1"]
    assert th["layer3.1.conv1"] / th["layer1.1.conv1"] == pytest.approx(ratio)


@pytest.mark.parametrize("by,amount", [("params", 0.5), ("macs", 0.3), ("macs", 0.7)])
def test_target_search_meets_target_and_prediction_is_exact(r20, by, amount):
    model, spec, groups = r20
    scores = score_groups(model, groups, "attention-mean", 1.0, [torch.randn(8, 3, 32, 32)])
    cost = CostModel.build(model, groups, spec.input_size)
    plan, T = plan_for_target(scores, cost, by, amount)
    got = reduction(cost, plan, by)
    assert amount <= got < amount + 0.03
    # just below T the target is not met: T is the smallest threshold that works
    assert reduction(cost, plan_for_threshold(scores, cost, T * 0.999, by), by) < amount
    pruned, _ = apply_plan(model, groups, plan, spec.input_size)
    c = count_model(pruned, spec.input_size)
    assert cost.predict(plan) == (c.params, c.macs)
    assert all(len(idx) < g.channels for g in groups for idx in [plan.get(g.root, [])])


@pytest.mark.parametrize("channels,keep,n,expected", [
    (64, 60, 16, 64), (64, 56, 16, 64), (64, 55, 16, 48), (64, 3, 16, 16), (64, 64, 16, 64), (16, 5, 16, 16),
    (24, 5, 16, 16), (24, 22, 16, 24), (12, 5, 8, 8), (31, 30, 1, 30), (96, 90, 32, 96), (96, 70, 32, 64),
])
def test_aligned_keep(channels, keep, n, expected):
    assert aligned_keep(channels, keep, n) == expected


@pytest.mark.parametrize("round_to", [4, 8, 16])
@pytest.mark.parametrize("by,amount", [("params", 0.5), ("macs", 0.5), ("macs", 0.3)])
def test_rounded_plans_keep_multiples_meet_the_target_and_predict_exactly(r20, round_to, by, amount):
    model, spec, groups = r20
    scores = score_groups(model, groups, "attention-mean", 1.0, [torch.randn(8, 3, 32, 32)])
    cost = CostModel.build(model, groups, spec.input_size)
    plan, T = plan_for_target(scores, cost, by, amount, round_to=round_to)
    assert reduction(cost, plan, by) >= amount
    by_root = {g.root: g for g in groups}
    for root, idxs in plan.items():
        kept = by_root[root].channels - len(idxs)
        assert kept % round_to == 0 and kept >= round_to, (root, kept)
        # the lowest-scored channels go first
        assert max(scores[root][idxs]) <= min(np.delete(scores[root], idxs))
    pruned, _ = apply_plan(model, groups, plan, spec.input_size)
    c = count_model(pruned, spec.input_size)
    assert cost.predict(plan) == (c.params, c.macs)
    dense = {layer.name: layer.out_channels for layer in count_model(model, spec.input_size).layers}
    for layer in c.layers:  # every conv keeps its full width or a multiple of round_to
        assert layer.out_channels == dense[layer.name] or layer.out_channels % round_to == 0, layer


def test_impossible_target(r20):
    model, spec, groups = r20
    scores = score_groups(model, groups, "l1")
    cost = CostModel.build(model, groups, spec.input_size)
    with pytest.raises(PrunekitError, match="out of reach"):
        plan_for_target(scores, cost, "params", 0.9999999)
    with pytest.raises(PrunekitError, match="between 0 and 1"):
        plan_for_target(scores, cost, "params", 1.0)


def test_masking_equals_removal_and_output_masking_would_not(r20):
    model, spec, groups = r20
    plan = {"layer2.0.conv1": [0, 3, 5], "layer2.0.conv2": [1, 2, 30], "conv1": [4]}
    pruned, _ = apply_plan(model, groups, plan, spec.input_size)
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad(), masked(model, groups, plan):
        masked_out = model(x)
    with torch.no_grad():
        assert (masked_out - pruned(x)).abs().max() <= 1e-4
        # zeroing the conv *output* instead is not the same model (the BN shift leaks through)
        h = model.layer2[0].conv1.register_forward_hook(lambda m, a, o: o * torch.tensor(
            [0.0 if i in (0, 3, 5) else 1.0 for i in range(32)]).view(1, -1, 1, 1))
        wrong = model(x)
        h.remove()
    assert (wrong - pruned(x)).abs().max() > 1e-3


@pytest.mark.parametrize("plan,match", [({"conv1": [0, 0]}, "duplicate"), ({"conv1": [99]}, "out of range"),
                                        ({"conv1": list(range(16))}, "all 16"), ({"linear": [0]}, "not a group")])
def test_surgery_validates_indices(r20, plan, match):
    model, spec, groups = r20
    with pytest.raises(PrunekitError, match=match):
        apply_plan(model, groups, plan, spec.input_size)


@pytest.mark.parametrize("round_to", [1, 16])
def test_size_steps_reach_half_the_macs_in_eight_rounds_and_never_cut_nothing(r20, round_to):
    """The search's size steps on a scripted sequence (no training): each round removes at most 10 % of the
    MACs left and at least one channel; flops=0.5 is reached within 8 rounds; the cost model stays exact."""
    from prunekit.core.planning import first_cut, threshold_for_size

    model, spec, groups = r20
    dense_macs = count_model(model, spec.input_size).macs
    base, rounds = model, 0
    while True:
        g = find_groups(base, build_graph(base, spec.input_size), spec.classifier)
        scores = score_groups(base, g, "l1")
        cost = CostModel.build(base, g, spec.input_size)
        goal = max(cost.dense_macs * 0.9, dense_macs * 0.5)
        T = first_cut(scores, cost, threshold_for_size(scores, cost, "macs", goal, round_to), "macs", round_to)
        plan = plan_for_threshold(scores, cost, T, "macs", round_to)
        assert sum(map(len, plan.values())) >= 1  # never a round that removes nothing
        base, _ = apply_plan(base, g, plan, spec.input_size)
        macs = count_model(base, spec.input_size).macs
        assert macs == cost.predict(plan)[1]
        if cost.dense_macs - macs > 0.15 * cost.dense_macs:  # more than 1.5 × the step only if nothing smaller cuts
            assert not any(plan_for_threshold(scores, cost, T * (1 - 1e-6), "macs", round_to).values())
        rounds += 1
        if macs <= 0.5 * dense_macs or rounds > 8:
            break
    assert rounds <= 8 and macs <= 0.5 * dense_macs


def test_first_cut_raises_a_threshold_that_removes_nothing(r20):
    from prunekit.core.planning import first_cut

    model, spec, groups = r20
    scores = score_groups(model, groups, "l1")
    cost = CostModel.build(model, groups, spec.input_size)
    assert not any(plan_for_threshold(scores, cost, 1e-9, "params").values())
    T = first_cut(scores, cost, 1e-9, "params")
    assert sum(map(len, plan_for_threshold(scores, cost, T, "params").values())) >= 1
    assert first_cut(scores, cost, T * 2, "params") == T * 2  # a threshold that already cuts is left alone
