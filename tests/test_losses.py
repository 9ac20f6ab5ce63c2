"""Each distillation loss against values computed by hand."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from deit_core.losses import DistillationLoss, soft_distillation


class FixedTeacher(nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = torch.tensor(logits)

    def forward(self, x):
        return self.logits


def ce(logits, label):
    return -math.log(math.exp(logits[label]) / sum(math.exp(v) for v in logits))


def softmax(v, t=1.0):
    e = [math.exp(x / t) for x in v]
    return [x / sum(e) for x in e]


CLS = [[2.0, 0.0, -1.0], [0.5, 0.5, 1.0]]
DIST = [[0.0, 1.0, 0.0], [1.0, -1.0, 0.0]]
TEACH = [[0.0, 3.0, 0.0], [2.0, 0.0, 1.0]]
LABELS = [0, 2]


def outputs():
    return torch.tensor(CLS, requires_grad=True), torch.tensor(DIST, requires_grad=True)


def test_none_trains_both_heads_on_the_label():
    loss = DistillationLoss(nn.CrossEntropyLoss(), None, "none", 0.5, 1.0)
    got = loss(torch.zeros(2), outputs(), torch.tensor(LABELS)).item()
    want = 0.5 * (sum(ce(c, y) for c, y in zip(CLS, LABELS)) / 2 + sum(ce(d, y) for d, y in zip(DIST, LABELS)) / 2)
    assert got == pytest.approx(want, rel=1e-6)


def test_hard_is_half_label_half_teacher_argmax():
    loss = DistillationLoss(nn.CrossEntropyLoss(), FixedTeacher(TEACH), "hard", 0.5, 1.0)
    got = loss(torch.zeros(2), outputs(), torch.tensor(LABELS))
    teacher_labels = [1, 0]  # argmax of TEACH rows
    want = 0.5 * sum(ce(c, y) for c, y in zip(CLS, LABELS)) / 2 + 0.5 * sum(ce(d, t) for d, t in zip(DIST, teacher_labels)) / 2
    assert got.item() == pytest.approx(want, rel=1e-6)
    got.backward()  # the teacher's inference-mode output must not break autograd


@pytest.mark.parametrize("alpha, tau", [(0.5, 1.0), (0.1, 3.0)])
def test_soft_is_ce_plus_tau_squared_kl(alpha, tau):
    loss = DistillationLoss(nn.CrossEntropyLoss(), FixedTeacher(TEACH), "soft", alpha, tau, kl_reduction="batchmean")
    got = loss(torch.zeros(2), outputs(), torch.tensor(LABELS)).item()
    kl = kl_sum(tau) / 2  # batchmean
    want = (1 - alpha) * sum(ce(c, y) for c, y in zip(CLS, LABELS)) / 2 + alpha * tau * tau * kl
    assert got == pytest.approx(want, rel=1e-5)


def kl_sum(tau):
    """sum over the batch of KL(softmax(teacher / tau) || softmax(student / tau)), by hand."""
    total = 0.0
    for d, t in zip(DIST, TEACH):
        p, q = softmax(t, tau), softmax(d, tau)
        total += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    return total


@pytest.mark.parametrize("alpha, tau", [(0.5, 1.0), (0.1, 3.0)])
def test_soft_deit_reduction_is_sum_over_numel(alpha, tau):
    """The reference DeiT code: kl_div(sum) * tau^2 / numel, i.e. 1/num_classes of the per-sample KL."""
    loss = DistillationLoss(nn.CrossEntropyLoss(), FixedTeacher(TEACH), "soft", alpha, tau, kl_reduction="deit")
    got = loss(torch.zeros(2), outputs(), torch.tensor(LABELS)).item()
    numel = len(DIST) * len(DIST[0])  # batch x classes
    want = (1 - alpha) * sum(ce(c, y) for c, y in zip(CLS, LABELS)) / 2 + alpha * tau * tau * kl_sum(tau) / numel
    assert got == pytest.approx(want, rel=1e-5)
    batchmean = soft_distillation(torch.tensor(DIST), torch.tensor(TEACH), tau, "batchmean").item()
    deit = soft_distillation(torch.tensor(DIST), torch.tensor(TEACH), tau, "deit").item()
    assert batchmean == pytest.approx(len(DIST[0]) * deit, rel=1e-6)  # the factor is the class count


def test_unknown_kl_reduction_is_refused():
    with pytest.raises(ValueError, match="kl_reduction"):
        DistillationLoss(nn.CrossEntropyLoss(), FixedTeacher(TEACH), "soft", 0.5, 1.0, kl_reduction="sum")


def test_soft_distillation_is_zero_when_student_matches_teacher():
    t = torch.tensor(TEACH)
    assert soft_distillation(t.clone(), t, 2.0).item() == pytest.approx(0.0, abs=1e-7)


def test_distillation_needs_two_heads():
    loss = DistillationLoss(nn.CrossEntropyLoss(), FixedTeacher(TEACH), "hard", 0.5, 1.0)
    with pytest.raises(ValueError, match="set_distilled_training"):
        loss(torch.zeros(2), torch.tensor(CLS), torch.tensor(LABELS))
    with pytest.raises(ValueError, match="needs a teacher"):
        DistillationLoss(nn.CrossEntropyLoss(), None, "soft", 0.5, 1.0)
