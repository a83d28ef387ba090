"""Recovery of any outputs without labels: each output's distillation loss against hand computations, the
automatic choice of loss, and the fidelity metrics on hand-made cases (issue 25)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from prunekit.compute.distill import kl_per_position, loss_kinds, output_losses, regression
from prunekit.compute.fidelity import _Tally
from prunekit.config.choices import parse_distill_loss
from prunekit.errors import PrunekitError


def test_kl_per_pixel_is_the_mean_over_positions_of_the_pointwise_kl():
    torch.manual_seed(0)
    s, t, T = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5), 2.0
    p_t, p_s = F.softmax(t / T, 1), F.softmax(s / T, 1)
    by_hand = (p_t * (p_t.log() - p_s.log())).sum(1).mean() * T ** 2
    assert float(kl_per_position(s, t, T)) == pytest.approx(float(by_hand), rel=1e-5)
    flat = torch.randn(6, 10), torch.randn(6, 10)  # class scores: the usual batch-mean KL
    p_t, p_s = F.softmax(flat[1] / T, 1), F.softmax(flat[0] / T, 1)
    assert float(kl_per_position(*flat, T)) == pytest.approx(float((p_t * (p_t / p_s).log()).sum(1).mean() * 4),
                                                             rel=1e-5)


def test_regressions_are_scale_free():
    t = torch.tensor([[1.0, -2.0], [3.0, 0.0]])
    s = t + torch.tensor([[0.5, 0.5], [-0.5, 0.5]])
    assert float(regression(s, t, "mse")) == pytest.approx(0.25 / (14 / 4))
    assert float(regression(100 * s, 100 * t, "mse")) == pytest.approx(float(regression(s, t, "mse")), rel=1e-5)
    sd = float(t.std())
    d = 0.5 / sd  # every error is 0.5 / σ, below smooth-L1's beta of 1: 0.5 · d²
    assert float(regression(s, t, "smooth-l1")) == pytest.approx(0.5 * d * d, rel=1e-5)
    assert float(regression(10 * s, 10 * t, "smooth-l1")) == pytest.approx(0.5 * d * d, rel=1e-5)


def test_losses_are_chosen_per_output_and_summed():
    t = {"out": torch.randn(2, 21, 4, 4), "boxes": torch.randn(2, 12, 4, 4), "logits": torch.randn(2, 7)}
    kinds = loss_kinds(t, None, parse_distill_loss("auto"))
    assert kinds == {"out": "kl", "boxes": "smooth-l1", "logits": "kl"}
    assert loss_kinds(t, 12, parse_distill_loss("auto"))["boxes"] == "kl"  # as many channels as classes
    assert loss_kinds(t, None, parse_distill_loss("boxes=mse")) == {"out": "kl", "boxes": "mse", "logits": "kl"}
    assert set(loss_kinds(t, None, parse_distill_loss("mse")).values()) == {"mse"}
    s = {k: v + 0.1 for k, v in t.items()}
    total, each = output_losses(s, t, None, kinds, temperature=4.0)
    assert set(each) == {"out", "boxes", "logits"} and float(total) == pytest.approx(sum(each.values()), rel=1e-5)
    same, each = output_losses(t, t, None, kinds)
    assert all(v == pytest.approx(0.0, abs=1e-6) for v in each.values())


def test_labels_keep_the_classic_loss_for_one_class_output():
    from prunekit.compute.distill import distillation_loss

    s, t, y = torch.randn(4, 10), torch.randn(4, 10), torch.tensor([1, 2, 3, 4])
    total, _ = output_losses(s, t, y, {"output": "kl"}, 4.0, 0.9)
    assert float(total) == pytest.approx(float(distillation_loss(s, t, y, 4.0, 0.9)))


@pytest.mark.parametrize("text", ["out=", "=kl", "out=l3", "magic"])
def test_bad_distill_loss_is_refused(text):
    with pytest.raises(PrunekitError, match="--distill-loss"):
        parse_distill_loss(text)


def test_fidelity_metrics_on_hand_made_cases():
    scores = _Tally("kl")  # 3 of 4 images keep the dense model's top class
    scores.add(torch.tensor([[2.0, 1.0], [0.0, 1.0], [5.0, 0.0], [0.0, 3.0]]),
               torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 3.0], [0.0, 1.0]]))
    assert scores.result() == {"top1_agreement": 75.0}
    maps = _Tally("kl")  # per-pixel argmax: dense [[0, 0], [1, 1]], pruned [[0, 1], [1, 1]]
    dense = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [1.0, 1.0]]]])
    pruned = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]], [[0.0, 1.0], [1.0, 1.0]]]])
    maps.add(pruned, dense)
    got = maps.result()
    # class 0: intersection 1, union 2; class 1: intersection 2, union 3 → mIoU (1/2 + 2/3) / 2
    assert got["pixel_agreement"] == pytest.approx(75.0) and got["miou"] == pytest.approx(100 * (0.5 + 2 / 3) / 2)
    reg = _Tally("smooth-l1")
    reg.add(torch.tensor([3.0, 4.0]), torch.tensor([0.0, 5.0]))  # ‖(3, −1)‖ / ‖(0, 5)‖
    assert reg.result()["rel_l2"] == pytest.approx(math.sqrt(10) / 5)
