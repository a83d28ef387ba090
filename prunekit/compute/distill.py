"""Knowledge distillation from the dense model (Hinton et al. 2015): the loss every retraining of a pruned
student can use, and the frozen teacher that supplies its soft targets.

Loss: α · T² · KL(softmax(z_t / T) ‖ softmax(z_s / T)) + (1 − α) · CE(z_s, y). The T² factor keeps the soft
term's gradients on the scale of the hard term's when T changes. The teacher is the *dense* model the run
started from: a frozen copy in eval mode (BatchNorm uses its running statistics, no gradients), on the
student's device and under the same autocast; under torchrun each rank holds its own copy.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class Distillation:
    """How a retraining distils: the teacher's temperature and the soft term's weight α ∈ [0, 1]."""
    temperature: float = 4.0
    alpha: float = 0.9


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                      temperature: float = 4.0, alpha: float = 0.9) -> torch.Tensor:
    """α T² KL(p_teacher^T ‖ p_student^T) + (1 − α) CE(student, labels), averaged over the batch (fp32)."""
    s, t = student_logits.float(), teacher_logits.float()
    soft = F.kl_div(F.log_softmax(s / temperature, dim=1), F.log_softmax(t / temperature, dim=1),
                    reduction="batchmean", log_target=True) * temperature ** 2
    if alpha >= 1.0:
        return soft
    return alpha * soft + (1 - alpha) * F.cross_entropy(s, labels)


def frozen_teacher(model: nn.Module) -> nn.Module:
    """A frozen copy of ``model`` for soft targets: eval mode, no gradients (its weights never change)."""
    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def resolve_distill(mode: str, has_labels: bool) -> bool:
    """``auto``: distil whenever there is labelled data to train on; ``on`` / ``off`` as said."""
    if mode == "auto":
        return bool(has_labels)
    return mode == "on"
