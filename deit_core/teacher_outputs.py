"""The ``teacher_outputs`` job: fill the teacher-output cache without training a student.

Its config is a distill config without the student: the same data, teacher, train settings
(augmentation, batch, seed, epochs) and processes as the students it serves. It builds exactly the
loaders and mixup a student run builds, seeds every epoch the same way (batches.py), and
runs only the teacher, in inference mode, on every process: the students' augmented batches at
inference speed. The cache is published whole at the end (deit_core/teacher_cache/); a cache
over the size cap is refused before the first batch (exit 2, naming the field).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from .batches import build_mixup, cap_workers, seed_epoch
from .config import JobConfig
from .data import build_train_loader, build_val_loader, load_datasets
from .engine import StepTimer, predict_teacher
from .events import MetricsLog
from .lease import check_lease
from .models import build_teacher
from .teacher_cache.feed import CacheOptions, Layout, open_feed
from .teacher_cache.store import human

log = logging.getLogger(__name__)


def _teacher_logits(teacher: torch.nn.Module):
    def live(images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return teacher(images)
    return live


def fill_cache(cfg: JobConfig, out: Path, events: MetricsLog, acc, options: CacheOptions) -> dict[str, Any]:
    """Run the teacher over ``train.epochs`` epochs of the students' batches into a new cache."""
    from accelerate.utils import set_seed

    t, rank, world = cfg.train, acc.process_index, acc.num_processes
    set_seed(t.seed)
    events.emit("phase", phase="loading data")
    with acc.main_process_first():
        train_ds, val_ds, classes = load_datasets(cfg.data, t)
    pin = acc.device.type == "cuda"
    loader_t = cap_workers(t, acc.device.type, world)
    train_loader = build_train_loader(train_ds, loader_t, rank, world, pin)
    val_loader = build_val_loader(val_ds, t.batch_size, rank, world, loader_t.workers, pin)
    events.emit("phase", phase="loading teacher")
    teacher, _ = build_teacher(cfg.teacher.model, len(classes), cfg.teacher.checkpoint, 0.0, classes)
    teacher = teacher.to(acc.device).eval().requires_grad_(False)
    mixup_fn = build_mixup(t, len(classes))  # as Run builds it: the teacher must see the students' mixed batches
    steps = len(train_loader)
    val_rows = int(acc.reduce(torch.tensor(len(val_loader.dataset), device=acc.device), reduction="sum"))
    events.emit("start", kind=cfg.kind, architecture=cfg.teacher.model, epochs=t.epochs, start_epoch=0,
                steps_per_epoch=steps, processes=world, device=str(acc.device), mixed_precision=acc.mixed_precision,
                global_batch=t.batch_size * world, classes=classes, train_images=len(train_ds), val_images=val_rows,
                resumed=False)
    layout = Layout(epochs=t.epochs, start_epoch=0, world=world, rank=rank, steps=steps, batch_size=t.batch_size,
                    num_classes=len(classes), val_rows=val_rows, device_type=acc.device.type,
                    precision=str(acc.mixed_precision))
    feed = open_feed(cfg, options, layout, _teacher_logits(teacher), events.emit, out, acc.device, require_write=True)
    acc.wait_for_everyone()  # rank 0 made the partial folder that every rank writes into

    events.emit("phase", phase="evaluating teacher")
    preds, teacher_metrics = predict_teacher(teacher, val_loader, acc)
    feed.record_val(preds, teacher_metrics["teacher_top1"])
    events.emit("teacher", **teacher_metrics)
    log.info("teacher_outputs run: %s, %d epochs x %d steps of %d, %d process(es) on %s; teacher val top-1 %.2f",
             cfg.teacher.model, t.epochs, steps, t.batch_size, world, acc.device, teacher_metrics["teacher_top1"])

    started = time.perf_counter()
    for epoch in range(t.epochs):
        check_lease(out)
        seed_epoch(t, epoch, rank)
        train_loader.sampler.set_epoch(epoch)
        feed.begin_epoch(epoch, train_loader.sampler, steps, t.batch_size)
        timer = StepTimer(global_batch=t.batch_size * world)
        for step, (images, labels) in enumerate(train_loader, start=1):
            images = images.to(acc.device, non_blocking=True)
            labels = labels.to(acc.device, non_blocking=True)
            sample_labels = labels
            if mixup_fn is not None:
                images, labels = mixup_fn(images, labels)
            with acc.autocast():  # as in the students' loop, where the teacher runs inside the loss
                feed.targets(step, images, sample_labels)
            timer.tick()
            if step % t.log_every == 0 or step == steps:
                check_lease(out)
                ips, s_per_step = timer.window()
                remaining = (t.epochs - epoch) * steps - step
                events.emit("step", epoch=epoch + 1, epochs=t.epochs, step=step, steps_per_epoch=steps,
                            img_per_s=ips, eta_s=round(remaining * s_per_step, 1))
        feed.end_epoch(epoch)
        elapsed = time.perf_counter() - started
        events.emit("epoch", epoch=epoch + 1, epochs=t.epochs, step=steps, steps_per_epoch=steps,
                    eta_s=round(elapsed / (epoch + 1) * (t.epochs - epoch - 1), 1), epoch_s=round(elapsed / (epoch + 1), 3))
        acc.wait_for_everyone()
    manifest = feed.finish(acc)
    metrics: dict[str, Any] = dict(teacher_metrics)
    if manifest is not None:  # rank 0
        metrics["cache_bytes"] = manifest.bytes
        events.emit("done", cache=manifest.name, **metrics)
        log.info("done: teacher-output cache %s (%s)", manifest.name, human(manifest.bytes))
    acc.wait_for_everyone()
    return metrics
