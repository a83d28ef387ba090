"""The held-out classes of issue 19, each with cases of our own (no timm needed): a split whose sizes are fixed in
the model's code (CSP), and a concat of a tensor with its own depthwise copy (Ghost), which torch-pruning groups
inexactly. Both must prune what can be pruned exactly and freeze, by name, what cannot: never a traceback."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn

from prunekit.core.graph import find_groups
from prunekit.core.trace import build_graph
from prunekit.core.surgery import apply_plan, inexact_groups, verify_masked_equals_pruned
from prunekit.errors import PrunekitError


def cbr(i, o, k=3, groups=1):
    return nn.Sequential(nn.Conv2d(i, o, k, padding=k // 2, groups=groups, bias=False), nn.BatchNorm2d(o), nn.ReLU())


class CSPBlock(nn.Module):
    """split → (identity | residual bottleneck) → concat → transition, the sizes of the split fixed in code."""

    def __init__(self, c=32, split_by: str = "split"):
        super().__init__()
        self.c, self.split_by = c, split_by
        self.stem = cbr(3, c)
        self.expand = cbr(c, 2 * c, 1)
        self.b1, self.b2, self.tb = cbr(c, c, 1), cbr(c, c), cbr(c, c, 1)
        self.trans = cbr(2 * c, c, 1)
        self.head = nn.Linear(c, 5)

    def forward(self, x):
        x = self.expand(self.stem(x))
        xs, xb = x.split(self.c, dim=1) if self.split_by == "split" else (x[:, :self.c], x[:, self.c:])
        xb = self.tb(self.b2(self.b1(xb)) + xb)
        return self.head(self.trans(torch.cat([xs, xb], 1)).mean((2, 3)))


class GhostBlock(nn.Module):
    def __init__(self, c=16, classes=5):
        super().__init__()
        self.stem = cbr(3, 8)
        self.primary = cbr(8, c, 1)
        self.cheap = cbr(c, c, 3, groups=c)  # a depthwise copy of the primary output
        self.dw = cbr(2 * c, 2 * c, 3, groups=2 * c)
        self.out = cbr(2 * c, 16, 1)
        self.head = nn.Linear(16, classes)

    def forward(self, x):
        x1 = self.primary(self.stem(x))
        x = self.dw(torch.cat([x1, self.cheap(x1)], 1))
        return self.head(self.out(x).mean((2, 3)))


def _groups(model):
    model.eval()
    return find_groups(model, build_graph(model, (3, 16, 16)), "head")


@pytest.mark.parametrize("split_by", ["split", "slice"])
def test_a_fixed_size_split_is_frozen_by_name_and_the_rest_prunes(split_by):
    torch.manual_seed(0)
    model = CSPBlock(split_by=split_by)
    groups = _groups(model)
    split = [g for g in groups if any(m.module == "expand.0" and m.kind == "out" for m in g.members)]
    assert split and all(g.reason and "fixed in the model's code" in g.reason for g in split)
    x = torch.randn(4, 3, 16, 16)
    plan = {g.root: [0, 1] for g in groups if g.prunable}
    assert plan, "the convs off the split still prune"
    pruned, _ = apply_plan(model, groups, plan, (3, 16, 16))
    assert verify_masked_equals_pruned(model, pruned, groups, plan, x)["passed"]
    with pytest.raises(PrunekitError, match="frozen"):
        apply_plan(model, groups, {split[0].root: [0]}, (3, 16, 16))


def test_a_pruned_model_that_does_not_run_is_a_clean_error():
    torch.manual_seed(0)
    model = CSPBlock()
    groups = _groups(model)
    g = next(g for g in groups if g.root == "b2.0")
    g.reason = None  # as before the fix: torch-pruning lets the split's channels go
    plan = {"b2.0": list(range(8))}
    pruned, _ = apply_plan(model, groups, plan, (3, 16, 16))
    with pytest.raises(PrunekitError, match="the pruned model does not run.*b2.0"):
        verify_masked_equals_pruned(model, pruned, groups, plan, torch.randn(2, 3, 16, 16))


def test_a_ghost_concat_prunes_a_channel_and_its_copy_together_exactly(tmp_path):
    """torch-pruning maps the primary conv's channel k to one root channel and its depthwise copy's to another (it
    reaches the producer twice, keeps one mapping): those two root channels become one stripe, removed together."""
    import prunekit

    torch.manual_seed(0)
    model = GhostBlock().eval()
    _randomise_bn(model)
    groups = _groups(model)
    ghost = next(g for g in groups if g.root == "dw.0")
    assert ghost.prunable and ghost.unit == 2 and ghost.stripes == [*range(16), *range(16)], ghost
    x = torch.randn(4, 3, 16, 16)
    plan = {"dw.0": [i for i, s in enumerate(ghost.stripes) if s in (1, 5, 6)], "stem.0": [2]}
    pruned, _ = apply_plan(model, groups, plan, (3, 16, 16))
    assert pruned.primary[0].out_channels == pruned.cheap[0].out_channels == 13 and pruned.dw[0].out_channels == 26
    assert verify_masked_equals_pruned(model, pruned, groups, plan, x, atol=1e-6)["passed"]
    with torch.no_grad():
        assert (model(x) - pruned(x)).abs().max() > 1e-3  # the cut changed the model: the check compared something
    # without the stripes, the copy's side of a pair alone is not exact (the float64 check says so)
    ghost.unit, ghost.stripes = 1, None
    assert inexact_groups(model, groups, {"dw.0": [17]}, x) == ["dw.0"]
    # the job delivers a verified model, the Ghost group pruned in pairs
    src = tmp_path / "ghost.py"
    root = str(Path(__file__).parents[2])
    src.write_text(f"import sys\nsys.path.insert(0, {root!r})\nfrom tests.core.test_held_out import GhostBlock\n"
                   "def make():\n    return GhostBlock()\n")
    run = prunekit.prune(prunekit.PruneConfig(model=f"{src}:make", data="random", target="flops=0.3",
                                              input_size=(3, 16, 16), schedule="oneshot", out=str(tmp_path / "r"),
                                              calib_images=8, verify_images=4, batch_size=8, speed_batches=(),
                                              round_to=1))
    assert run["verification"][0]["passed"]
    assert not any(g["frozen"] for g in run["groups"] if g["root"] == "dw.0"), run["groups"]


# ------------------------------------------------------------------------------------------ issue 25's classes
class LongChain(nn.Module):
    """A long chain of elementwise ops between a conv and a concatenation, as a dual-path network's paths are:
    torch-pruning's channel inference gives up on it (``int + NoneType`` in its concat mapping)."""

    def __init__(self, n=12):
        super().__init__()
        self.n = n
        self.stem, self.side = cbr(3, 16), cbr(16, 8, 1)
        self.out = cbr(24, 16, 1)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        x = self.stem(x)
        y = x
        for _ in range(self.n):
            y = y + torch.sigmoid(y)
        return self.head(self.out(torch.cat([y, self.side(x)], 1)).mean((2, 3)))


def test_a_concat_torch_pruning_cannot_size_is_sized_from_the_trace():
    import torch_pruning as tp

    torch.manual_seed(0)
    model = LongChain().eval()
    with pytest.raises(TypeError), pytest.warns(UserWarning):  # torch-pruning alone: the case this guards
        tp.DependencyGraph().build_dependency(model, torch.randn(1, 3, 16, 16))
    groups = _groups(model)
    assert {g.root for g in groups if g.prunable} == {"stem.0", "side.0", "out.0"}
    plan = {"stem.0": [0, 3], "side.0": [1, 2, 5]}
    pruned, _ = apply_plan(model, groups, plan, (3, 16, 16))
    assert pruned.out[0].in_channels == 24 - 5  # each side of the concat lost its own channels
    assert verify_masked_equals_pruned(model, pruned, groups, plan, torch.randn(4, 3, 16, 16))["passed"]


class ScaledStdConv(nn.Conv2d):
    """A weight-standardised conv with a per-output-channel gain (as timm's ScaledStdConv2d in NFNets)."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.gain = nn.Parameter(torch.rand(self.out_channels, 1, 1, 1) + 0.5)

    def forward(self, x):
        w = self.weight.flatten(1)
        w = ((w - w.mean(1, keepdim=True)) / (w.std(1, keepdim=True) + 1e-5)).view_as(self.weight) * self.gain
        return nn.functional.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


class PaddedGainConv(ScaledStdConv):
    """The same, padding its input itself first (as ``*Same`` convs do): not a plain conv, so never folded."""

    def forward(self, x):
        w = self.weight * self.gain
        return nn.functional.conv2d(nn.functional.pad(x, (1, 1, 1, 1)), w, self.bias, self.stride, 0)


class StdNet(nn.Module):
    def __init__(self, conv=ScaledStdConv):
        super().__init__()
        self.c1 = nn.Sequential(conv(3, 16, 3, padding=1), nn.ReLU())
        self.c2 = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.c3 = nn.Sequential(conv(16, 16, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        return self.head(self.c3(self.c2(self.c1(x))).mean((2, 3)))


def test_weight_computing_convs_fold_into_plain_ones_exactly():
    from prunekit.models.fold import fold_computed_weights

    torch.manual_seed(0)
    model, x = StdNet().eval(), torch.randn(4, 3, 16, 16)
    before = model(x)
    assert fold_computed_weights(model) == ["c1.0", "c3.0"]
    assert type(model.c1[0]) is nn.Conv2d and not hasattr(model.c1[0], "gain")
    torch.testing.assert_close(model(x), before, atol=1e-5, rtol=1e-5)
    padded = StdNet(PaddedGainConv).eval()
    assert fold_computed_weights(padded) == []  # pads its input: left as it is


def _job(tmp_path, cls_name, target="flops=0.2"):
    import prunekit

    src = tmp_path / f"{cls_name}.py"
    root = str(Path(__file__).parents[2])
    src.write_text(f"import sys\nsys.path.insert(0, {root!r})\nfrom tests.core.test_held_out import StdNet, "
                   f"{cls_name}\ndef make():\n    return StdNet({cls_name})\n")
    return prunekit.prune(prunekit.PruneConfig(model=f"{src}:make", data="random", target=target,
                                               input_size=(3, 16, 16), schedule="oneshot",
                                               out=str(tmp_path / cls_name), calib_images=8, verify_images=4,
                                               batch_size=8, speed_batches=(), round_to=1))


def test_a_weight_standardised_net_prunes_and_reloads_exactly(tmp_path):
    from prunekit.runs.rebuild import load

    run = _job(tmp_path, "ScaledStdConv")
    assert run["verification"][0]["passed"] and not any(g["frozen"] for g in run["groups"])
    model = load(str(tmp_path / "ScaledStdConv"), trust_code=True)
    assert any(m.out_channels < 16 for m in model.modules() if isinstance(m, nn.Conv2d))


def test_groups_that_break_the_run_are_frozen_and_the_plan_made_again(tmp_path, caplog):
    run = _job(tmp_path, "PaddedGainConv", target="flops=0.3")  # its gain is not pruned with its weight
    assert run["verification"][0]["passed"]
    frozen = {g["root"]: g["frozen"] for g in run["groups"] if g["frozen"]}
    assert frozen and all("does not run" in r for r in frozen.values()), frozen
    assert any("leaves a model that does not run" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


class Grouped(nn.Module):
    """A ResNeXt-style bottleneck: 1×1 → grouped 3×3 (4 groups) → 1×1, with a residual stream."""

    def __init__(self):
        super().__init__()
        self.stem, self.a, self.b = cbr(3, 32), cbr(32, 32, 1), cbr(32, 32, 3, groups=4)
        self.c = nn.Sequential(nn.Conv2d(32, 32, 1, bias=False), nn.BatchNorm2d(32))
        self.head = nn.Linear(32, 5)

    def forward(self, x):
        x = self.stem(x)
        return self.head(torch.relu(x + self.c(self.b(self.a(x)))).mean((2, 3)))


def test_a_grouped_conv_prunes_in_whole_stripes_and_stays_grouped():
    import numpy as np

    from prunekit.core.costmodel import CostModel
    from prunekit.core.metrics import count_model
    from prunekit.core.planning import plan_for_target
    from prunekit.core.scoring import by_stripe

    torch.manual_seed(0)
    model = Grouped().eval()
    groups = _groups(model)
    striped = {g.root: g for g in groups if g.unit > 1}
    assert set(striped) == {"a.0", "b.0"} and all(g.prunable and g.unit == 4 for g in striped.values())
    a = striped["a.0"]  # stripe j = channel j of every conv group: {j, 8 + j, 16 + j, 24 + j}
    assert [i for i, s in enumerate(a.stripes) if s == 3] == [3, 11, 19, 27]
    scores = {g.root: by_stripe(g, np.random.default_rng(1).random(g.channels)) for g in groups if g.prunable}
    cost = CostModel.build(model, groups, (3, 16, 16))
    plan, _ = plan_for_target(scores, cost, "macs", 0.3)
    for root, g in striped.items():
        removed = [g.stripes[i] for i in plan.get(root, [])]
        assert all(removed.count(s) == 4 for s in set(removed)), (root, removed)  # whole stripes only
    pruned, _ = apply_plan(model, groups, plan, (3, 16, 16))
    assert pruned.b[0].groups == 4 and pruned.b[0].in_channels % 4 == 0 and pruned.b[0].out_channels % 4 == 0
    assert verify_masked_equals_pruned(model, pruned, groups, plan, torch.randn(4, 3, 16, 16))["passed"]
    assert cost.predict(plan) == (count_model(pruned, (3, 16, 16)).params, count_model(pruned, (3, 16, 16)).macs)


def test_equal_stripes_stay_whole_in_the_lowest_first_order():
    """Dead stripes (all scores 0) tie: the order still takes one whole stripe before the next."""
    import numpy as np

    from prunekit.core.graph import ChannelGroup
    from prunekit.core.scoring import by_stripe

    g = ChannelGroup(root="x", channels=8, unit=2, stripes=[0, 1, 2, 3, 0, 1, 2, 3])
    s = by_stripe(g, np.array([0.0, 0.0, 2.0, 3.0, 0.0, 0.0, 2.0, 3.0]))
    order = [g.stripes[i] for i in np.argsort(s, kind="stable")]
    assert order[:2] == [order[0]] * 2 and order[2:4] == [order[2]] * 2 and {order[0], order[2]} == {0, 1}


class Mixed(nn.ModuleDict):
    """A mixed conv as timm's MixedConv2d is: its input split by sizes it keeps (``splits``), one conv per chunk,
    the results concatenated."""

    def __init__(self, c_in, c_out, kernels, depthwise=False):
        super().__init__()
        ins, outs = [c_in // len(kernels)] * len(kernels), [c_out // len(kernels)] * len(kernels)
        for i, (k, a, b) in enumerate(zip(kernels, ins, outs)):
            self.add_module(str(i), nn.Conv2d(a, b, k, padding=k // 2, groups=a if depthwise else 1, bias=False))
        self.splits = ins

    def forward(self, x):
        return torch.cat([c(t) for c, t in zip(self.values(), torch.split(x, self.splits, 1))], 1)


def _sync_mixed(m: Mixed) -> None:
    m.splits = [c.in_channels for c in m.values()]


class MixNetBlock(nn.Module):
    """A grouped pointwise mixed conv (2 chunks, 18 channels each) into a depthwise one with 3 kernel sizes (12
    channels each): each pointwise chunk's channels cross a depthwise chunk boundary, so two groups go through one
    split, the case torch-pruning maps with stale offsets once the first is cut."""

    def __init__(self):
        super().__init__()
        self.stem = cbr(3, 24)
        self.pw, self.bn1 = Mixed(24, 36, [1, 1]), nn.BatchNorm2d(36)
        self.dw, self.bn2 = Mixed(36, 36, [3, 5, 7], depthwise=True), nn.BatchNorm2d(36)
        self.out = cbr(36, 16, 1)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        x = torch.relu(self.bn1(self.pw(self.stem(x))))
        x = torch.relu(self.bn2(self.dw(x)))
        return self.head(self.out(x).mean((2, 3)))


def _randomise_bn(model):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2), m.weight.data.uniform_(0.5, 1.5)


def test_a_split_its_owner_keeps_sizes_for_is_frozen_until_the_owner_is_registered(monkeypatch):
    from prunekit.models.extensions import SPLIT_OWNERS

    torch.manual_seed(0)
    model = MixNetBlock()
    through = {"dw.0", "dw.1", "dw.2", "stem.0"}
    frozen = {g.root: g.reason for g in _groups(model) if g.reason}
    assert through <= set(frozen) and all("fixed in the model's code" in frozen[r] for r in through), frozen
    monkeypatch.setitem(SPLIT_OWNERS, Mixed, _sync_mixed)
    groups = {g.root: g for g in _groups(model)}
    assert all(groups[r].prunable for r in through), {r: groups[r].reason for r in through}


def test_a_mixed_conv_prunes_through_its_split_exactly_and_replays(monkeypatch):
    from prunekit.core.surgery import replay
    from prunekit.models.extensions import SPLIT_OWNERS

    monkeypatch.setitem(SPLIT_OWNERS, Mixed, _sync_mixed)
    torch.manual_seed(0)
    model = MixNetBlock().eval()
    _randomise_bn(model)
    groups = _groups(model)
    # a group per depthwise chunk; dw.1's channels 0-5 come from pw.0, 6-11 from pw.1: all cut in one plan
    plan = {"dw.0": [0, 3, 11], "dw.1": [2, 5, 6, 9], "dw.2": [0, 11], "stem.0": [1, 2, 20]}
    pruned, history = apply_plan(model, groups, plan, (3, 16, 16))
    assert pruned.dw.splits == [9, 8, 10] and pruned.pw.splits == [10, 11]
    assert [c.out_channels for c in pruned.pw.values()] == [18 - 3 - 2, 18 - 2 - 2]
    x = torch.randn(4, 3, 16, 16)
    check = verify_masked_equals_pruned(model, pruned, groups, plan, x, atol=1e-5)
    assert check["passed"] and check["max_abs_diff"] < 1e-5
    again = replay(MixNetBlock().eval(), history, (3, 16, 16))
    again.load_state_dict(pruned.state_dict())
    assert again.dw.splits == pruned.dw.splits
    with torch.no_grad():
        torch.testing.assert_close(again(x), pruned(x), rtol=0, atol=0)


@pytest.mark.parametrize("allocate", ["threshold", "knapsack"])
def test_no_plan_empties_a_layer_the_group_owns_a_part_of(monkeypatch, allocate):
    """stem.0's 24 channels feed the two chunks of the pointwise mixed conv (12 each): with chunk 0's channels
    scored lowest, a deep cut still leaves each chunk's conv a channel (it used to empty pw.0, which broke the run
    and froze the whole group)."""
    import numpy as np

    from prunekit.core.allocate import knapsack_plan
    from prunekit.core.costmodel import CostModel
    from prunekit.core.planning import plan_for_threshold
    from prunekit.models.extensions import SPLIT_OWNERS

    monkeypatch.setitem(SPLIT_OWNERS, Mixed, _sync_mixed)
    torch.manual_seed(0)
    model = MixNetBlock().eval()
    groups = _groups(model)
    cost = CostModel.build(model, groups, (3, 16, 16))
    assert sorted(map(list, cost.group_segments["stem.0"])) == [list(range(12)), list(range(12, 24))]
    scores = {g.root: np.linspace(1, 2, g.channels) for g in groups if g.prunable}
    scores["stem.0"] = np.concatenate([np.linspace(0.01, 0.1, 12), np.linspace(1, 2, 12)])
    if allocate == "threshold":
        plan = plan_for_threshold(scores, cost, 1e6, "macs")
    else:
        plan = knapsack_plan(scores, cost, "macs", 0.8)
    removed = set(plan["stem.0"])
    assert len(removed) >= 12 if allocate == "threshold" else removed
    assert not set(range(12)) <= removed and not set(range(12, 24)) <= removed
    assert 11 not in removed  # chunk 0's best channel is its keeper
    pruned, _ = apply_plan(model, groups, plan, (3, 16, 16))
    assert min(c.in_channels for c in pruned.pw.values()) >= 1
    assert verify_masked_equals_pruned(model, pruned, groups, plan, torch.randn(2, 3, 16, 16))["passed"]


class ShuffleNet(nn.Module):
    """Two of torchvision's ShuffleNetV2 units (chunk → branch → concat → channel shuffle)."""

    def __init__(self):
        super().__init__()
        from torchvision.models.shufflenetv2 import InvertedResidual

        self.stem = cbr(3, 32)
        self.units = nn.Sequential(InvertedResidual(32, 32, 1), InvertedResidual(32, 32, 1))
        self.head = nn.Linear(32, 5)

    def forward(self, x):
        return self.head(self.units(self.stem(x)).mean((2, 3)))


def test_a_channel_shuffle_traces_freezes_what_crosses_it_and_the_branches_prune_exactly():
    torch.manual_seed(0)
    model = ShuffleNet().eval()
    _randomise_bn(model)
    groups = {g.root: g for g in _groups(model)}
    assert "reshape that moves channels" in groups["units.1.branch2.5"].reason
    inner = sorted(r for r, g in groups.items() if g.prunable)  # each branch's own channels (1×1 → depthwise)
    assert inner == ["units.0.branch2.3", "units.1.branch2.3"], {r: g.reason for r, g in groups.items()}
    plan = {"units.0.branch2.3": [0, 5, 9], "units.1.branch2.3": [1, 2, 3, 15]}
    pruned, history = apply_plan(model, list(groups.values()), plan, (3, 16, 16))
    assert pruned.units[1].branch2[3].out_channels == 12  # the depthwise conv between the two 1×1s
    x = torch.randn(4, 3, 16, 16)
    assert verify_masked_equals_pruned(model, pruned, list(groups.values()), plan, x, atol=1e-5)["passed"]
    groups["units.1.branch2.5"].reason = None  # the freeze is needed: through the shuffle, removal is not exact
    assert inexact_groups(model, list(groups.values()), {"units.1.branch2.5": [0, 1]}, x) == ["units.1.branch2.5"]


def test_a_striped_group_keeps_whole_stripes_when_a_layer_must_keep_a_channel():
    """A Ghost group (stripes of a channel and its copy) whose primary conv is a part of it: the channel kept for
    that layer keeps its copy too, at any depth of cut."""
    import numpy as np

    from prunekit.core.costmodel import CostModel
    from prunekit.core.planning import plan_for_threshold
    from prunekit.core.scoring import by_stripe

    torch.manual_seed(0)
    model = GhostBlock().eval()
    groups = _groups(model)
    cost = CostModel.build(model, groups, (3, 16, 16))
    ghost = next(g for g in groups if g.root == "dw.0")
    assert cost.group_segments.get("dw.0") and cost.group_stripes["dw.0"] == ghost.stripes
    for seed in range(5):
        scores = {g.root: by_stripe(g, np.random.default_rng(seed).random(g.channels)) for g in groups if g.prunable}
        removed = plan_for_threshold(scores, cost, 1e6, "macs")["dw.0"]
        stripes = [ghost.stripes[i] for i in removed]
        assert all(stripes.count(s) == 2 for s in stripes) and len(removed) == 30, (seed, removed)
    # two layers each owning one half (their best channels in different stripes): both stripes go last, whole
    from prunekit.core.planning import removal_order

    scores = np.arange(32, dtype=float)  # best of 0-15 is 15 (stripe 15), best of 16-31 is 31 (stripe 15) ...
    scores[3] = 100.0  # ... so make the first half's best channel 3 (stripe 3)
    order, floor = removal_order(scores, [np.arange(16), np.arange(16, 32)], ghost.stripes)
    assert floor == 4 and sorted(order[-4:].tolist()) == [3, 15, 19, 31]


def test_a_network_that_also_runs_on_one_unbatched_image_is_traced_on_the_batch():
    """No BatchNorm, only convs (SSD's VGG backbone): torch-pruning's ``model(*example)`` ran it on one unbatched
    image and traced the channels on the wrong axis — no conv was found, nothing could be pruned."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(16, 16, 3, padding=1),
                          nn.ReLU(inplace=True), nn.Conv2d(16, 8, 1)).eval()
    model(torch.randn(3, 16, 16))  # it does run unbatched
    groups = find_groups(model, build_graph(model, (3, 16, 16)), None, input_size=(3, 16, 16))
    assert sorted(g.root for g in groups if g.prunable) == ["0", "2"]
    plan = {"0": [1, 4], "2": [0, 3, 7]}
    pruned, _ = apply_plan(model, groups, plan, (3, 16, 16))
    assert verify_masked_equals_pruned(model, pruned, groups, plan, torch.randn(2, 3, 16, 16))["passed"]


def test_tracing_that_runs_out_of_memory_is_one_clear_error_and_the_limit_is_lifted(monkeypatch):
    """Swin V2's tracing took > 19 GB and the OS killed the process; under the cap it is a PrunekitError."""
    import resource

    from prunekit.core import trace

    before = resource.getrlimit(resource.RLIMIT_AS)
    with pytest.raises(PrunekitError, match="ran out of memory.*smaller --input-size"):
        with trace.memory_limit("tracing", headroom=64 * 2**20):
            bytearray(512 * 2**20)  # more than the 64 MB allowed
    assert resource.getrlimit(resource.RLIMIT_AS) == before
    with trace.memory_limit("tracing"):  # the default leaves room for ordinary work
        assert len(bytearray(64 * 2**20)) == 64 * 2**20


def test_a_reshape_that_keeps_channels_on_their_axis_maps_as_identity():
    """A global-context block ((B, C, H, W) → (B, C, H·W), weighted by a spatial softmax, summed, → (B, C, 1, 1)):
    torch-pruning took the first view for a flatten and its group search grew indices without end (> 16 GB, for
    this 3-layer model). Mapped as identity, the groups come out at once; what prunes is exact."""
    from prunekit.core import trace

    class GC(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem, self.mask, self.out = cbr(3, 16), nn.Conv2d(16, 1, 1), cbr(16, 8, 1)
            self.head = nn.Linear(8, 5)

        def forward(self, x):
            x = self.stem(x)
            b, c, h, w = x.shape
            attn = torch.softmax(self.mask(x).view(b, 1, h * w), -1)
            context = (x.view(b, c, h * w) * attn).sum(-1).view(b, c, 1, 1)
            return self.head(self.out(x + context).mean((2, 3)))

    torch.manual_seed(0)
    model = GC().eval()
    with trace.memory_limit("this test", headroom=2**30):  # the old way fails here in seconds, not minutes
        groups = _groups(model)
    prunable = [g.root for g in groups if g.prunable]
    assert prunable == ["out.0"], [(g.root, g.reason) for g in groups]  # stem is tied to the 1-channel mask
    plan = {"out.0": [1, 6]}
    pruned, _ = apply_plan(model, groups, plan, (3, 16, 16))
    assert verify_masked_equals_pruned(model, pruned, groups, plan, torch.randn(2, 3, 16, 16))["passed"]
