"""The teacher's fitness on the student's training inputs (issue 18 item 4): the metric on crafted
logits and mixed targets, its wiring through ``train_one_epoch``, and the warning rule."""
from __future__ import annotations

import torch
from torch import nn

from deit_core.engine import teacher_hits, train_one_epoch
from deit_core.losses import DistillationLoss
from deit_core.teacher_fitness import MIN_TRAIN_TOP1, fitness_warning


def test_teacher_hits_counts_class_index_labels():
    teacher = torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [0, 0, 5.0], [5.0, 0, 0]]).argmax(1)
    assert int(teacher_hits(teacher, torch.tensor([0, 1, 0, 2]))) == 2


def test_teacher_hits_scores_a_mixed_target_by_its_dominant_label():
    # rows of 0.7 / 0.3 mixes (plus smoothing): the dominant label is the one with weight 0.7
    smooth = 0.1 / 4
    target = torch.full((3, 4), smooth)
    target[0, 1] += 0.7 * 0.9
    target[0, 3] += 0.3 * 0.9  # dominant 1
    target[1, 2] += 0.3 * 0.9
    target[1, 0] += 0.7 * 0.9  # dominant 0
    target[2, 3] += 0.55 * 0.9
    target[2, 2] += 0.45 * 0.9  # dominant 3
    assert int(teacher_hits(torch.tensor([1, 2, 3]), target)) == 2  # right on rows 0 and 2, wrong (minor label) on 1


def test_teacher_hits_on_timm_mixup_targets():
    from timm.data import Mixup

    torch.manual_seed(0)
    import numpy as np

    np.random.seed(0)
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    mix = Mixup(mixup_alpha=0.8, cutmix_alpha=0.0, label_smoothing=0.1, num_classes=8)
    _, target = mix(torch.zeros(8, 3, 4, 4), labels)
    lam = float(target[0, 0] - target[0, 7]) / 0.9 * 0.5 + 0.5  # row 0 mixes class 0 (lam) with class 7 (1 - lam)
    dominant = labels if lam > 0.5 else labels.flip(0)
    assert int(teacher_hits(labels, target)) == (8 if lam > 0.5 else 0)
    assert int(teacher_hits(dominant, target)) == 8


class TwoHeads(nn.Module):
    """A tiny student with the (class, distillation) heads of a distilled DeiT in train mode."""

    def __init__(self, classes: int):
        super().__init__()
        self.cls, self.dist = nn.Linear(4, classes), nn.Linear(4, classes)

    def forward(self, x):
        return self.cls(x), self.dist(x)


class AlwaysZero(nn.Module):
    """A frozen teacher that predicts class 0 for every input."""

    def forward(self, x):
        logits = torch.zeros(x.shape[0], 3)
        logits[:, 0] = 1.0
        return logits


def test_train_one_epoch_records_the_teachers_top1_on_its_inputs():
    from accelerate import Accelerator
    from timm.scheduler import CosineLRScheduler

    acc = Accelerator(cpu=True)
    labels = torch.tensor([0, 1, 2, 0, 0, 1, 2, 0, 0, 2])  # label 0 on 5 of 10: the teacher is right on 50%
    data = torch.utils.data.TensorDataset(torch.randn(10, 4), labels)
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    model = TwoHeads(3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = CosineLRScheduler(opt, t_initial=10, t_in_epochs=False)
    model, opt = acc.prepare(model, opt)
    for dtype in ("hard", "soft"):
        loss = DistillationLoss(nn.CrossEntropyLoss(), AlwaysZero(), dtype, 0.5, 1.0)
        stats, _ = train_one_epoch(model, loss, loader, opt, sched, acc, 0, 0)
        assert stats["teacher_train_top1"] == 50.0
    plain = DistillationLoss(nn.CrossEntropyLoss(), None, "none", 0.0, 1.0)
    stats, _ = train_one_epoch(model, plain, loader, opt, sched, acc, 0, 0)
    assert "teacher_train_top1" not in stats  # no teacher, no metric


def test_a_fit_teacher_gets_no_warning():
    assert fitness_warning(92.0, 94.0, "hard", 0.5) is None
    assert fitness_warning(MIN_TRAIN_TOP1, MIN_TRAIN_TOP1 + 2, "soft", 0.5) is None
    assert fitness_warning(50.0, 91.0, "none", 0.5) is None  # no teacher in the loss
    assert fitness_warning(50.0, 91.0, "hard", 0.0) is None


def test_a_hard_teacher_wrong_on_the_crops_is_warned_with_the_fixes():
    text = fitness_warning(80.0, 91.0, "hard", 0.5)
    assert text is not None
    assert "80.0%" in text and "91.0%" in text and "20% wrong labels" in text
    assert "train the teacher longer or under the student's augmentation" in text
    assert "distillation.type soft" in text and "lower distillation.alpha (now 0.5)" in text


def test_a_soft_teacher_is_not_told_to_prefer_soft():
    text = fitness_warning(70.0, None, "soft", 0.7)
    assert text is not None and "type soft" not in text and "lower distillation.alpha (now 0.7)" in text


def test_an_augmentation_gap_warns_even_above_the_threshold():
    assert fitness_warning(88.0, 99.0, "hard", 0.5) is not None  # 11 points worse on the student's crops
    assert fitness_warning(88.0, 92.0, "hard", 0.5) is None
