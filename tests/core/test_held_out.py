"""The held-out classes of issue 19, each with cases of our own (no timm needed): a split whose sizes are fixed in
the model's code (CSP), and a concat of a tensor with its own depthwise copy (Ghost), which torch-pruning groups
inexactly. Both must prune what can be pruned exactly and freeze, by name, what cannot: never a traceback."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn

from prunekit.core.graph import build_graph, find_groups
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


def test_a_ghost_concat_is_frozen_by_name_and_the_rest_prunes_exactly(tmp_path):
    import prunekit

    torch.manual_seed(0)
    model = GhostBlock()
    groups = _groups(model)
    ghost = [g for g in groups if g.reason and "did not record" in g.reason]
    assert ghost, [(g.root, g.reason) for g in groups]
    x = torch.randn(4, 3, 16, 16)
    # the float64 check agrees: unfrozen, those groups' removal is not exact
    for g in ghost:
        g.reason = None
    plan = {g.root: [0, 1] for g in groups if g.prunable}
    assert set(inexact_groups(model, groups, plan, x)) >= {g.root for g in ghost}
    groups = _groups(model)
    exact = {g.root: [0, 1] for g in groups if g.prunable}
    pruned, _ = apply_plan(model, groups, exact, (3, 16, 16))
    assert verify_masked_equals_pruned(model, pruned, groups, exact, x)["passed"]
    # the job delivers a verified model with those groups frozen and named
    src = tmp_path / "ghost.py"
    root = str(Path(__file__).parents[2])
    src.write_text(f"import sys\nsys.path.insert(0, {root!r})\nfrom tests.core.test_held_out import GhostBlock\n"
                   "def make():\n    return GhostBlock()\n")
    run = prunekit.prune(prunekit.PruneConfig(model=f"{src}:make", data="random", target="flops=0.2",
                                              input_size=(3, 16, 16), schedule="oneshot", out=str(tmp_path / "r"),
                                              calib_images=8, verify_images=4, batch_size=8, speed_batches=(),
                                              round_to=1))
    assert run["verification"][0]["passed"]
    frozen = {g["root"]: g["frozen"] for g in run["groups"] if g["frozen"]}
    assert any("did not record" in r for r in frozen.values()), frozen
