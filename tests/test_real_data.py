"""Real CIFAR-10 JPEGs and the shared weights: accuracy as documented, one-shot pruning to a target, verified.

These take tens of seconds each (10,000-image evaluations on 2 cores); CI runs them.
"""
from __future__ import annotations

import pytest
import torch

import prunekit
from prunekit.models import resolve_model
from prunekit.compute.train import evaluate

from .conftest import shared_file

pytestmark = pytest.mark.slow

# ../shared/README.md: accuracy on the JPEG test split
DOCUMENTED_TEST_ACCURACY = {"resnet20": 87.74, "resnet56": 89.36}


@pytest.mark.parametrize("arch", sorted(DOCUMENTED_TEST_ACCURACY))
def test_shared_weights_reach_documented_accuracy(arch, cifar):
    model, _ = resolve_model(arch, weights=shared_file("weights", f"{arch}-cifar10jpeg.pt"))
    acc = evaluate(model, cifar, cifar.test)
    assert abs(acc - DOCUMENTED_TEST_ACCURACY[arch]) <= 0.3, acc


@pytest.mark.parametrize("criterion", ["attention-mean", "l1"])
def test_resnet56_oneshot_half_params(criterion, cifar_tarball, tmp_path):
    cfg = prunekit.PruneConfig(model="resnet56", weights=shared_file("weights", "resnet56-cifar10jpeg.pt"),
                               data=cifar_tarball, target="params=0.5", out=str(tmp_path / "run"),
                               criterion=criterion, calib_images=256, eval_images=1000, schedule="oneshot",
                               round_to=1, speed_batches=())  # unaligned: the tight overshoot bound below
    run = prunekit.prune(cfg)
    assert 0.5 <= run["reduction"]["params"] < 0.52
    check = run["verification"][0]
    assert check["passed"] and check["max_abs_diff"] <= 1e-4  # absolute, on 64 real test images
    acc = run["accuracy"]
    assert acc["images"] == 1000 and 85 <= acc["dense"] <= 93 and 0 <= acc["pruned"] <= acc["dense"]


def test_finetune_recovers_accuracy(cifar_tarball, tmp_path):
    cfg = prunekit.PruneConfig(model="resnet20", weights=shared_file("weights", "resnet20-cifar10jpeg.pt"),
                               data=cifar_tarball, target="flops=0.5", out=str(tmp_path / "run"),
                               calib_images=256, eval_images=1000, finetune_epochs=0.05, schedule="oneshot")
    run = prunekit.prune(cfg)
    acc = run["accuracy"]
    assert run["finetune"]["steps"] == 18
    assert acc["pruned_finetuned"] >= acc["pruned"] + 5, acc
    pruned = prunekit.load(str(tmp_path / "run"))
    assert sum(p.numel() for p in pruned.parameters()) == run["pruned"]["params"]
    x = torch.zeros(1, 3, 32, 32)
    assert pruned(x).shape == (1, 10)
