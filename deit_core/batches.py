"""How a run's training batches are made, shared by a training run (train.py) and the
teacher_outputs job (teacher_outputs.py): the teacher-output cache is exact only if both make the
very same batches, so both call these rather than each keeping its own copy. (They lived in
train.py, which teacher_outputs.py then had to import back from inside a function.)
"""
from __future__ import annotations

import dataclasses
import logging
import os

import torch

from .config import TrainConfig

log = logging.getLogger("deit_core.train")


def seed_epoch(t: TrainConfig, epoch: int, rank: int) -> None:
    """Every source of randomness in the epoch is a function of (seed, epoch, rank): see data.py.
    Mixup and cutmix draw from numpy's RNG seeded here, so the teacher_outputs job, which calls
    this too, mixes exactly the batches the students will."""
    from accelerate.utils import set_seed

    set_seed(t.seed + 1000 * epoch + rank)


def build_mixup(t: TrainConfig, num_classes: int):
    """timm's Mixup/CutMix with the run's settings (None when both are off): the students' mixed
    batches, which the teacher_outputs job's teacher must see too."""
    if t.mixup <= 0 and t.cutmix <= 0:
        return None
    from timm.data import Mixup

    return Mixup(mixup_alpha=t.mixup, cutmix_alpha=t.cutmix, label_smoothing=t.smoothing, num_classes=num_classes)


def cap_workers(t: TrainConfig, device_type: str, world: int) -> TrainConfig:
    """On CPU, loader workers compete with the training threads for the same cores; spinning
    OpenMP threads then starve them (seen: 10x slower steps on 2 cores). Keep only spare cores."""
    if device_type != "cpu" or t.workers == 0:
        return t
    spare = max((os.cpu_count() or 1) - world * torch.get_num_threads(), 0) // world
    if spare < t.workers:
        log.info("using %d loader worker(s) instead of %d: no spare CPU cores beside %d training thread(s) x %d process(es)",
                 spare, t.workers, torch.get_num_threads(), world)
        t = dataclasses.replace(t, workers=spare)
    return t
