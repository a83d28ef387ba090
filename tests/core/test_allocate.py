"""Knapsack widths (prunekit.core.allocate): the DP is optimal (= brute force), plans meet their target on the
cost model, stay on the channel grid, and overshoot it by no more than one grid step of one group."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from prunekit.core.allocate import candidate_widths, knapsack_plan, min_loss_choice, plan_to_target
from prunekit.errors import PrunekitError
from prunekit.core.graph import find_groups
from prunekit.core.trace import build_graph
from prunekit.core.costmodel import CostModel, reduction
from prunekit.models import resolve_model
from prunekit.core.scoring import score_groups


def brute_force(options, required):
    best = None
    for combo in itertools.product(*[range(len(o)) for o in options]):
        saving = sum(options[g][j][0] for g, j in enumerate(combo))
        loss = sum(options[g][j][1] for g, j in enumerate(combo))
        if saving >= required and (best is None or loss < best):
            best = loss
    return best


@pytest.mark.parametrize("seed", range(40))
def test_dp_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    options = [[(0, 0.0)] + [(int(rng.integers(0, 15)), float(rng.random() * 5)) for _ in range(rng.integers(1, 5))]
               for _ in range(rng.integers(1, 5))]
    required = int(rng.integers(0, 40))
    best = brute_force(options, required)
    picked = min_loss_choice(options, required)
    if best is None:
        assert picked is None
        return
    assert picked is not None
    saving = sum(options[g][j][0] for g, j in enumerate(picked))
    loss = sum(options[g][j][1] for g, j in enumerate(picked))
    assert saving >= required
    assert loss == pytest.approx(best, abs=1e-9)


def test_candidate_widths_are_on_the_grid():
    assert candidate_widths(64, 16) == [16, 32, 48, 64]
    assert candidate_widths(16, 16) == [16]  # nothing to choose: the group stays whole
    assert candidate_widths(40, 8, min_keep=20) == [24, 32, 40]
    spread = candidate_widths(512, 1, max_options=9)
    assert len(spread) == 9 and spread[-1] == 512 and spread == sorted(spread)


@pytest.fixture(scope="module")
def resnet20():
    torch.manual_seed(0)
    model, spec = resolve_model("resnet20")
    groups = find_groups(model, build_graph(model, spec.input_size), spec.classifier)
    scores = score_groups(model, groups, "attention-mean", 1.0, [torch.randn(16, *spec.input_size)])
    return model, groups, scores, CostModel.build(model, groups, spec.input_size)


@pytest.mark.parametrize("by,amount,round_to", [("params", 0.4, 16), ("params", 0.4, 8), ("macs", 0.3, 8),
                                                ("macs", 0.5, 1)])
def test_knapsack_meets_the_target_within_one_grid_step(resnet20, by, amount, round_to):
    _, _, scores, cost = resnet20
    plan = knapsack_plan(scores, cost, by, amount, round_to)
    got = reduction(cost, plan, by)
    assert got >= amount
    for root, removed in plan.items():
        kept = len(scores[root]) - len(removed)
        assert kept % round_to == 0 or kept == len(scores[root])
        # removed channels are the group's lowest-scored ones
        assert max(scores[root][removed]) <= np.sort(scores[root])[len(removed) - 1] + 1e-12
        # minimal: giving any group back one grid step misses the target
        grid = candidate_widths(len(scores[root]), round_to)
        up = grid[grid.index(kept) + 1]
        order = np.argsort(scores[root], kind="stable")
        smaller = {**plan, root: sorted(int(i) for i in order[:len(scores[root]) - up])}
        assert reduction(cost, {k: v for k, v in smaller.items() if v}, by) < amount


def test_knapsack_loses_no_more_value_than_the_threshold(resnet20):
    _, _, scores, cost = resnet20
    for by, amount, rt in (("params", 0.4, 16), ("macs", 0.4, 8)):
        ks, _, _ = plan_to_target(scores, cost, by, amount, rt, False, None, "knapsack")
        th, _, _ = plan_to_target(scores, cost, by, amount, rt, False, None, "threshold")
        # the knapsack's value: score × the layers each group touches (--knapsack-value layers)
        lost = {name: sum(cost.group_layers[r] * float(scores[r][i].sum()) for r, i in p.items())
                for name, p in (("ks", ks), ("th", th))}
        assert lost["ks"] <= lost["th"] + 1e-9
        assert reduction(cost, ks, by) <= reduction(cost, th, by) + 1e-9  # and overshoots no more


def test_knapsack_matches_brute_force_on_a_small_model():
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                                torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                                torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4))
    size = (3, 8, 8)
    groups = find_groups(model, build_graph(model, size), "11")
    rng = np.random.default_rng(0)
    scores = {g.root: rng.random(g.channels) + 0.1 for g in groups if g.prunable}
    cost = CostModel.build(model, groups, size)
    roots = list(scores)
    order = {r: np.argsort(scores[r], kind="stable") for r in roots}
    for amount in (0.2, 0.45, 0.6):
        plan = knapsack_plan(scores, cost, "params", amount, round_to=2)
        lost = sum(float(scores[r][i].sum()) for r, i in plan.items())
        best = None
        for widths in itertools.product(*[candidate_widths(len(scores[r]), 2) for r in roots]):
            p = {r: sorted(int(i) for i in order[r][:len(scores[r]) - w]) for r, w in zip(roots, widths)}
            p = {k: v for k, v in p.items() if v}
            if reduction(cost, p, "params") >= amount:
                loss = sum(float(scores[r][i].sum()) for r, i in p.items())
                best = loss if best is None else min(best, loss)
        assert reduction(cost, plan, "params") >= amount
        assert lost == pytest.approx(best, rel=1e-9)


def test_out_of_reach_is_a_clear_error(resnet20):
    _, _, scores, cost = resnet20
    with pytest.raises(PrunekitError, match="out of reach"):
        knapsack_plan(scores, cost, "params", 0.99, 16)
    plan, _, used = plan_to_target(scores, cost, "params", 0.9, 16, True, None, "knapsack")  # relaxed grid
    assert used < 16 and reduction(cost, plan, "params") >= 0.9


class StaircaseTable:
    """A latency table whose time is not monotone in width: widths off a 16-block pay for the whole next block,
    plus a penalty (as a runtime's blocked kernels do), so a narrower layer can be slower."""

    def ms(self, shape):
        def blocks(c):
            return -(-c // 16) + (0.5 if c % 16 else 0.0)
        return blocks(shape.in_c) * blocks(shape.out_c) * shape.h * shape.w * 1e-4

    def total(self, shapes):
        return sum(self.ms(s) for s in shapes)

    def save(self):
        pass


def test_knapsack_on_a_non_monotone_latency_table(resnet20):
    model, groups, scores, _ = resnet20
    cost = CostModel.build(model, groups, (3, 32, 32)).attach_latency(model, (3, 32, 32), StaircaseTable())
    for amount in (0.2, 0.4):
        plan = knapsack_plan(scores, cost, "latency", amount, round_to=8)
        assert reduction(cost, plan, "latency") >= amount
