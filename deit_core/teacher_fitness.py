"""Whether a distill run's teacher is fit to teach: a warning, naming the fix, when it is not.

Why: a teacher's val top-1 is measured on clean, centre-cropped images, but the student trains on
random-resized, RandAugmented, mixed crops. The demo teacher is right on 91% of clean images yet
on only 79-83% of those crops, so hard distillation (whose target *is* the teacher's argmax) feeds
about 20% wrong labels into ``alpha`` of the loss, and no val number shows it. The training loop
records ``teacher_train_top1`` every epoch (deit_core/engine.py: the teacher's top-1 on the
student's own inputs, mixed targets scored by their dominant label); this module turns it into
advice. Pure Python (no torch), so the rule is tested and read apart from training.

The threshold, :data:`MIN_TRAIN_TOP1` = 85%: below it more than 15% of the teacher's targets are
wrong. Hard distillation at the paper's alpha 0.5 then puts over 7.5% of the whole loss on a
single wrong class per image; that is as much label mass as label smoothing 0.1 moves, but
concentrated on one wrong class instead of spread thin, and it is the size of error that changed
which recipe won in issue 18. :data:`MAX_AUGMENTATION_GAP` = 5 points: a teacher this much worse on
the student's crops than on clean val images was trained for other inputs, and the fix is its
training, not the student's.
"""
from __future__ import annotations

MIN_TRAIN_TOP1 = 85.0
MAX_AUGMENTATION_GAP = 5.0


def fitness_warning(teacher_train_top1: float, teacher_val_top1: float | None, distillation_type: str,
                    alpha: float) -> str | None:
    """A warning naming the fixes when the teacher is often wrong on the student's training inputs,
    else None (also for ``distillation_type`` none, which uses no teacher).

    Args:
        teacher_train_top1: the teacher's top-1 (%) on the student's augmented, mixed crops.
        teacher_val_top1: its top-1 (%) on the clean val images, or None when not known.
        distillation_type: ``hard``, ``soft`` or ``none``.
        alpha: the weight of the distillation term.
    """
    if distillation_type == "none" or alpha <= 0:
        return None
    gap = None if teacher_val_top1 is None else teacher_val_top1 - teacher_train_top1
    low = teacher_train_top1 < MIN_TRAIN_TOP1
    shifted = gap is not None and gap > MAX_AUGMENTATION_GAP
    if not (low or shifted):
        return None
    wrong = 100.0 - teacher_train_top1
    seen = f"the teacher is right on only {teacher_train_top1:.1f}% of the student's training crops"
    if teacher_val_top1 is not None:
        seen += f" ({teacher_val_top1:.1f}% on clean val images)"
    fixes = ["train the teacher longer or under the student's augmentation (train.aa, mixup, cutmix, scale_min)"]
    if distillation_type == "hard":
        effect = (f"so hard distillation trains the distillation head on {wrong:.0f}% wrong labels, "
                  f"{alpha * wrong:.0f}% of the loss (alpha {alpha:g})")
        fixes.append("prefer distillation.type soft, whose targets keep the teacher's doubt")
    else:
        effect = f"so the soft targets often favour a wrong class, at weight alpha {alpha:g}"
    fixes.append(f"lower distillation.alpha (now {alpha:g})")
    return f"{seen}, {effect}: " + "; or ".join(fixes)
