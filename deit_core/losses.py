"""DeiT distillation losses on the student's two heads (class token, distillation token).

``soft``: ``(1 - alpha) * CE(cls, y) + alpha * tau^2 * KL(softmax(t / tau) || softmax(dist / tau))``.
``kl_reduction`` says how the KL is averaged:

- ``batchmean``: the true per-sample KL divergence averaged over the batch, the paper's formula (and
  timm's distillation task).
- ``deit`` (the config's default, ``deit_core.config.DEFAULT_KL_REDUCTION``): the reference DeiT code,
  ``kl_div(..., reduction='sum') / student_logits.numel()``, which also divides by the number of
  classes C: the soft term is ``1/C`` of ``batchmean`` (10x smaller at 10 classes, 1000x at 1000),
  i.e. alpha is effectively shrunk. The recipe's alpha and tau were tuned with it, and on small data
  it measured better (``benchmarks/gain_study.py``; the reasons beside the constant).

``hard``: ``(1 - alpha) * CE(cls, y) + alpha * CE(dist, argmax t)``; the paper's hard distillation
is alpha = 0.5, the default: half on the label, half on the teacher's decision.

``none``: both heads learn the label (their average is the prediction), so a ``none`` run is the
same architecture and compute as a distilled one, minus the teacher. (DeiT's own no-distillation
baseline is a model without the distillation token, trained on the class head alone.)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import DEFAULT_KL_REDUCTION, DISTILLATION_TYPES, KL_REDUCTIONS


@dataclass
class TeacherTargets:
    """The teacher's outputs for one batch: logits (soft; None in an argmax-only cache) and argmax
    (hard). Given to the loss by the teacher-output cache (deit_core/teacher_cache/) instead of
    a teacher forward."""

    logits: torch.Tensor | None
    argmax: torch.Tensor


class DistillationLoss(nn.Module):
    """Wraps the base criterion and the frozen teacher; the training loop is the same for all types."""

    def __init__(self, base_criterion: nn.Module, teacher: nn.Module | None, distillation_type: str,
                 alpha: float, tau: float, kl_reduction: str = DEFAULT_KL_REDUCTION):
        super().__init__()
        if distillation_type not in DISTILLATION_TYPES:
            raise ValueError(f"distillation type must be one of {DISTILLATION_TYPES}, got {distillation_type!r}")
        if distillation_type != "none" and teacher is None:
            raise ValueError(f"{distillation_type} distillation needs a teacher model")
        if kl_reduction not in KL_REDUCTIONS:
            raise ValueError(f"kl_reduction must be one of {KL_REDUCTIONS}, got {kl_reduction!r}")
        self.base_criterion = base_criterion
        self.teacher = teacher
        self.type = distillation_type
        self.alpha = alpha
        self.tau = tau
        self.kl_reduction = kl_reduction

    def teacher_logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """Teacher forward in inference mode; the clone makes the result usable as a loss target."""
        with torch.inference_mode():
            logits = self.teacher(inputs)
        return logits.clone()

    def forward(self, inputs: torch.Tensor, outputs, labels: torch.Tensor,
                teacher: TeacherTargets | None = None) -> torch.Tensor:
        """``teacher``: the batch's teacher outputs when they are known (cached); else the teacher runs."""
        if isinstance(outputs, (tuple, list)):
            cls_out, dist_out = outputs
        else:
            cls_out, dist_out = outputs, None
        if self.type == "none":
            if dist_out is None:
                return self.base_criterion(cls_out, labels)
            return 0.5 * (self.base_criterion(cls_out, labels) + self.base_criterion(dist_out, labels))
        if dist_out is None:
            raise ValueError(
                "distillation needs the student's (class, distillation) outputs: build a timm "
                "deit_*_distilled_* model, call set_distilled_training(True) and keep it in train mode")
        base = self.base_criterion(cls_out, labels)
        if teacher is None:
            logits = self.teacher_logits(inputs)
            teacher = TeacherTargets(logits=logits, argmax=logits.argmax(dim=1))
        if self.type == "soft":
            if teacher.logits is None:
                raise ValueError("soft distillation needs the teacher's logits, not only its argmax")
            distill = soft_distillation(dist_out, teacher.logits, self.tau, self.kl_reduction)
        else:
            distill = F.cross_entropy(dist_out, teacher.argmax)
        return base * (1 - self.alpha) + distill * self.alpha


def soft_distillation(student_logits: torch.Tensor, teacher_logits: torch.Tensor, tau: float,
                      reduction: str = "batchmean") -> torch.Tensor:
    """``tau^2 * KL(p_teacher || p_student)`` at temperature ``tau``, averaged over the batch
    (``batchmean``) or, as the reference DeiT code, summed and divided by batch x classes (``deit``)."""
    kl = F.kl_div(
        F.log_softmax(student_logits.float() / tau, dim=1),
        F.log_softmax(teacher_logits.float() / tau, dim=1),
        reduction="sum" if reduction == "deit" else "batchmean",
        log_target=True,
    )
    if reduction == "deit":
        kl = kl / student_logits.numel()
    elif reduction != "batchmean":
        raise ValueError(f"reduction must be one of {KL_REDUCTIONS}, got {reduction!r}")
    return kl * (tau * tau)


def base_criterion(mixup_active: bool, smoothing: float) -> nn.Module:
    """Soft-target CE under mixup/cutmix (targets are mixed), else label smoothing, else plain CE."""
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    if mixup_active:
        return SoftTargetCrossEntropy()
    if smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=smoothing)
    return nn.CrossEntropyLoss()
