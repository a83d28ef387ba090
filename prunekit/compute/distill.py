"""Knowledge distillation from the dense model (Hinton et al. 2015): the loss every retraining of a pruned
student can use, and the frozen teacher that supplies its soft targets.

Loss: α · T² · KL(softmax(z_t / T) ‖ softmax(z_s / T)) + (1 − α) · CE(z_s, y). The T² factor keeps the soft
term's gradients on the scale of the hard term's when T changes. The teacher is the *dense* model the run
started from: a frozen copy in eval mode (BatchNorm uses its running statistics, no gradients), on the
student's device and under the same autocast; under torchrun each rank holds its own copy.

**Any outputs, no labels** (:func:`output_losses`): the dense model's outputs are the targets, so a model with
several outputs (a segmenter's ``out`` and ``aux`` maps, a detector's class and box maps) is recovered from
images alone. Each output gets a loss of its own, summed: ``kl`` — T² · KL along the channel dimension, per
position (class scores; per-pixel class maps), averaged over the positions; ``mse`` — mean squared error over
the dense output's mean square (scale-free); ``smooth-l1`` — smooth-L1 on both outputs divided by the dense
output's standard deviation. ``auto`` takes ``kl`` for class scores (an output of shape (N, C), a map with as
many channels as the model has classes, or a map named like class scores: ``out``, ``aux``, ``logits``, ``cls…``)
and ``smooth-l1`` for any other map (boxes, embeddings, depth: linear in large errors, so an early mismatch
cannot blow the training up). With labels and one class-score output,
the (1 − α) cross-entropy term is added as before.
"""
from __future__ import annotations

import copy
import torch
import torch.nn as nn
import torch.nn.functional as F


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


def resolve_distill(mode: str, real_data: bool) -> bool:
    """``auto``: distil whenever there are real images to train on (labelled or not); ``on`` / ``off`` as said."""
    if mode == "auto":
        return bool(real_data)
    return mode == "on"


CLASS_NAMES = ("out", "aux", "logits", "cls", "class", "score", "seg")  # how class-score outputs are named


def is_class_scores(name: str, t: torch.Tensor, num_classes: int | None) -> bool:
    """``auto``'s rule: scores (N, C); a map with as many channels as the model has classes; or a map named like
    class scores (``out`` / ``aux`` of a segmenter, ``logits``, ``cls…``, ``class…``, ``score…``, ``seg…``)."""
    if t.dim() == 2:
        return True
    if t.dim() < 2:
        return False
    leaf = name.rsplit(".", 1)[-1].lower()
    return (num_classes is not None and t.shape[1] == num_classes) or leaf.startswith(CLASS_NAMES)


def loss_kinds(outputs, num_classes: int | None, chosen: dict[str, str]) -> dict[str, str]:
    """Output name → its distillation loss (``kl``, ``mse``, ``smooth-l1``): ``chosen`` (from
    :func:`prunekit.config.choices.parse_distill_loss`) by name, else its ``*`` entry, else ``auto``'s rule
    (:func:`is_class_scores`: ``kl``; anything else ``smooth-l1``, which a large early error cannot blow up)."""
    from prunekit.outputs import named_outputs

    kinds = {}
    for name, t in named_outputs(outputs):
        kind = chosen.get(name, chosen.get("*", "auto"))
        if kind == "auto":
            kind = "kl" if is_class_scores(name, t, num_classes) else "smooth-l1"
        kinds[name] = kind
    return kinds


def kl_per_position(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T² · KL(softmax(t / T) ‖ softmax(s / T)) along dimension 1, averaged over every other position."""
    s, t = student.float(), teacher.float()
    kl = F.kl_div(F.log_softmax(s / temperature, dim=1), F.log_softmax(t / temperature, dim=1), reduction="sum",
                  log_target=True)
    return kl * temperature ** 2 / (s.numel() / s.shape[1])


def regression(student: torch.Tensor, teacher: torch.Tensor, kind: str) -> torch.Tensor:
    s, t = student.float(), teacher.float()
    if kind == "mse":
        return F.mse_loss(s, t) / t.pow(2).mean().clamp_min(1e-12)
    scale = t.std().clamp_min(1e-6)
    return F.smooth_l1_loss(s / scale, t / scale)


def output_losses(student_out, teacher_out, labels: torch.Tensor | None, kinds: dict[str, str],
                  temperature: float = 4.0, alpha: float = 0.9) -> tuple[torch.Tensor, dict[str, float]]:
    """(total loss, {output name: its loss}) of a student against the dense teacher, whatever the outputs'
    structure. One class-score output with labels: the classic α-weighted soft + hard loss."""
    from prunekit.outputs import named_outputs

    student, teacher = named_outputs(student_out), dict(named_outputs(teacher_out))
    if labels is not None and len(student) == 1 and kinds[student[0][0]] == "kl" and student[0][1].dim() == 2:
        loss = distillation_loss(student[0][1], teacher[student[0][0]], labels, temperature, alpha)
        return loss, {student[0][0]: float(loss.detach())}
    total, each = 0.0, {}
    for name, s in student:
        kind = kinds[name]
        term = kl_per_position(s, teacher[name], temperature) if kind == "kl" else regression(s, teacher[name], kind)
        each[name] = float(term.detach())
        total = total + term
    return total, each
