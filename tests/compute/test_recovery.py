"""Recovery after surgery: BatchNorm re-estimation (changes running statistics and nothing else) and
distillation from the dense model (the loss equals a hand computation; the teacher never changes)."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from prunekit.compute.bnstats import reestimate_bn
from prunekit.data import ArrayDataset, DataBundle
from prunekit.compute.distill import distillation_loss, frozen_teacher, resolve_distill
from prunekit.compute.train import TrainSchedule, train


def bundle(n=64, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 255, (n, 8, 8, 3), dtype=np.uint8)
    labels = rng.integers(0, 4, n).astype(np.int64)
    ds = ArrayDataset(images, labels)
    return DataBundle("tiny", ds, ds, ds, 4, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Dropout(0.5),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4))


def test_bn_reestimation_changes_running_statistics_and_nothing_else():
    b, model = bundle(), net()
    bn = model[1]
    bn.running_mean.fill_(5.0)
    bn.running_var.fill_(9.0)
    params = {k: v.clone() for k, v in model.named_parameters()}
    model.train()
    model[3].eval()  # a mixed state, to see it restored
    modes = [m.training for m in model.modules()]
    momentum = bn.momentum
    done = reestimate_bn(model, b, images=48, batch_size=16)
    assert done["images"] == 48 and done["layers"] == 1
    assert all(torch.equal(v, params[k]) for k, v in model.named_parameters())
    assert [m.training for m in model.modules()] == modes and bn.momentum == momentum
    # the cumulative average over the 3 batches of 16 = the mean of the per-batch statistics
    calib = b.calibration(48)
    with torch.no_grad():
        feats = [model[0](x) for x, _ in b.batches(calib, 16)]
    mean = torch.stack([f.mean((0, 2, 3)) for f in feats]).mean(0)
    var = torch.stack([f.var((0, 2, 3), unbiased=True) for f in feats]).mean(0)
    assert torch.allclose(bn.running_mean, mean, atol=1e-5)
    assert torch.allclose(bn.running_var, var, atol=1e-5)
    assert not torch.allclose(bn.running_mean, torch.full_like(mean, 5.0))


@pytest.mark.parametrize("better", [True, False])
def test_bn_reestimation_is_undone_when_it_reads_worse(better):
    """``recalibrate`` with a judge: statistics that read worse on validation images are put back, exactly."""
    from types import SimpleNamespace

    from prunekit.compute.device import CPU
    from prunekit.compute.recovery import recalibrate

    b, model = bundle(), net()
    model[1].running_mean.fill_(5.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    readings = iter([50.0, 60.0 if better else 40.0])  # before, after
    done = recalibrate(model, b, SimpleNamespace(bn_images=48, batch_size=16), 0, CPU,
                       judge=lambda m: next(readings))
    assert (done["judged_before"], done["judged_after"], done["kept"]) == (50.0, 60.0 if better else 40.0, better)
    same = all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert same is not better  # kept: new statistics; undone: every tensor as it was


def test_bn_reestimation_off_or_without_batchnorm():
    assert reestimate_bn(net(), bundle(), images=0) is None
    assert reestimate_bn(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten()), bundle(), images=16) is None


def test_distillation_loss_equals_a_hand_computation():
    torch.manual_seed(0)
    s, t, y = torch.randn(5, 4), torch.randn(5, 4), torch.tensor([0, 1, 2, 3, 0])
    T, alpha = 3.0, 0.7
    ps, pt = F.softmax(s / T, 1), F.softmax(t / T, 1)
    kl = sum(float((pt[i] * (pt[i].log() - ps[i].log())).sum()) for i in range(5)) / 5
    ce = sum(-math.log(float(F.softmax(s, 1)[i, y[i]])) for i in range(5)) / 5
    expected = alpha * T * T * kl + (1 - alpha) * ce
    assert float(distillation_loss(s, t, y, T, alpha)) == pytest.approx(expected, rel=1e-5)
    assert float(distillation_loss(t, t, y, T, 1.0)) == pytest.approx(0.0, abs=1e-6)  # same logits: no soft loss


def test_training_with_a_teacher_leaves_the_teacher_unchanged_and_moves_the_student():
    b, student = bundle(), net()
    teacher = frozen_teacher(net())
    before = copy.deepcopy(teacher.state_dict())
    start = copy.deepcopy(student.state_dict())
    summary = train(student, b, TrainSchedule(epochs=2, lr=0.05, batch_size=16), teacher=teacher)
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert any(not torch.equal(v, start[k]) for k, v in student.state_dict().items())
    assert summary["distill"]["temperature"] == 4.0 and summary["distill"]["teacher_s"] >= 0
    assert math.isfinite(summary["last_loss"])


def test_distill_auto_follows_the_labels():
    assert resolve_distill("auto", True) and not resolve_distill("auto", False)
    assert resolve_distill("on", False) and not resolve_distill("off", True)
