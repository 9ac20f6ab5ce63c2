"""One training run, teacher or distill: ``python -m deit_core.train --config FILE --output DIR``.

This is what ``torchrun`` and ``accelerate launch`` start (and ``distillery train`` calls). It
builds everything from the validated config, runs the epochs, and writes the run directory of
DESIGN.md from rank 0 alone. Exit codes: 0 success, 2 bad config or inputs (the ``error`` event and
stderr name the field), 1 any other failure.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import socket
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .batches import build_mixup, cap_workers, seed_epoch
from .checkpoint import (
    LAST,
    PREV,
    batch_size_refusal,
    epochs_refusal,
    latest_valid,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    schedule_changes,
    set_rng_state,
)
from .config import DEFAULT_KL_REDUCTION, ConfigError, JobConfig, TrainConfig, load_config_file
from .data import IMAGENET_MEAN, IMAGENET_STD, INTERPOLATION, build_train_loader, build_val_loader, load_datasets
from .engine import evaluate, predict_teacher, predict_val, train_one_epoch
from .events import MetricsLog
from .layout import CHECKPOINTS_DIR, EXIT_BAD_CONFIG, EXIT_FAILED, EXIT_OK, LAUNCHER_VARIABLE, METRICS_FILE, TRAIN_LOG
from .lease import check_lease
from .losses import DistillationLoss, base_criterion
from .models import build_student, build_teacher, save_final
from .predictions import VAL_PREDICTIONS, predictions_document, relative_images
from .preprocess import resize_size
from .teacher_cache.feed import CacheOptions, Layout, TeacherFeed, open_feed
from .teacher_fitness import fitness_warning
from .teacher_outputs import fill_cache
from .train_cli import add_cache_arguments, add_resume_arguments

log = logging.getLogger("deit_core.train")


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def make_accelerator(cfg: JobConfig):
    """One Accelerator for CPU (gloo when several processes) or CUDA; 'auto' precision is bf16 on
    GPUs that support it and fp32 on CPU, where autocast costs more than it saves."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    cuda = torch.cuda.is_available()
    mp = cfg.train.mixed_precision
    if mp == "auto":
        mp = "bf16" if cuda and torch.cuda.is_bf16_supported() else "no"
    if mp == "fp16" and not cuda:
        raise ConfigError("train.mixed_precision", "fp16 needs a CUDA device; use 'no' or 'bf16' on CPU")
    return Accelerator(mixed_precision=mp, cpu=not cuda,
                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=False)])


def _setup_logging(out: Path, main: bool) -> None:
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    fmt = logging.Formatter("%(asctime)s %(levelname)s [rank %(rank)s] %(message)s")
    rank = _rank()

    class _RankFilter(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            record.rank = rank
            return True

    handlers: list[logging.Handler] = []
    if not root.handlers:  # `distillery train` has set up console logging already
        handlers.append(logging.StreamHandler(sys.stderr))
    if main:
        handlers.append(logging.FileHandler(out / TRAIN_LOG))
    for h in handlers:
        h.setFormatter(fmt)
        h.addFilter(_RankFilter())
        root.addHandler(h)


@dataclass
class Progress:
    """Where a run stands: the next epoch, optimizer updates so far, best val top-1 (-1 before any),
    and the metrics of the last epoch done (saved in the checkpoint, for a resume with none left)."""

    epoch: int = 0
    num_updates: int = 0
    best_top1: float = -1.0
    metrics: dict[str, float] = field(default_factory=dict)


def reshard_changes(saved: dict[str, Any], world: int, accum_steps: int) -> list[str]:
    """What differs between a checkpoint's data layout and this run's: process count and accumulation.

    Either one changes the global batch, hence the lr, the steps per epoch and the schedule's
    length in updates, so a resumed run would no longer continue the run that wrote the checkpoint.
    """
    changes = []
    old_world = saved.get("world_size")
    if old_world is not None and int(old_world) != world:
        changes.append(f"processes (world size) {old_world} -> {world}")
    old_accum = (saved.get("config") or {}).get("train", {}).get("accum_steps")
    if old_accum is not None and int(old_accum) != accum_steps:
        changes.append(f"train.accum_steps {old_accum} -> {accum_steps}")
    return changes


class Run:
    """One run: ``__init__`` builds everything from the config (the one place attributes are set);
    ``execute`` is resume, then ``run_epoch`` per epoch (each returns its metrics, as DeiT's
    ``train_one_epoch``/``evaluate`` do), then ``write_final``."""

    def __init__(self, cfg: JobConfig, out: Path, resume: bool, events: MetricsLog, accelerator,
                 allow_reshard: bool = False, cache: CacheOptions | None = None):
        from accelerate.utils import set_seed

        t = cfg.train
        self.cfg, self.out, self.events, self.acc = cfg, out, events, accelerator
        self.resume, self.allow_reshard = resume, allow_reshard
        self.cache_options = cache or CacheOptions()
        self.teacher_feed: TeacherFeed | None = None  # set in execute() when a teacher runs
        self.ckpt_dir = out / CHECKPOINTS_DIR
        self.distilled = cfg.kind == "distill"
        set_seed(t.seed)
        # ``phase`` events say what a run does before its first step (read live by the service's page).
        events.emit("phase", phase="loading data")
        with accelerator.main_process_first():
            train_ds, val_ds, self.classes = load_datasets(cfg.data, t)
        world = accelerator.num_processes
        self.train_loader, self.val_loader = self._loaders(train_ds, val_ds)
        events.emit("phase", phase="loading teacher" if self.distilled and cfg.distillation.type != "none" else "building model")
        model, self.model_kwargs, self.architecture, self.teacher = self._models()
        self.mixup_fn = build_mixup(t, len(self.classes))
        dist = cfg.distillation
        self.criterion = DistillationLoss(base_criterion(self.mixup_fn is not None, t.smoothing), self.teacher,
                                          dist.type if dist else "none", dist.alpha if dist else 0.0,
                                          dist.tau if dist else 1.0, dist.kl_reduction if dist else DEFAULT_KL_REDUCTION)
        self.global_batch = t.batch_size * world * t.accum_steps
        self.updates_per_epoch = math.ceil(len(self.train_loader) / t.accum_steps)
        model = model.to(accelerator.device)
        optimizer, self.scheduler, self.lr = build_optimization(model, t, self.global_batch, self.updates_per_epoch)
        self.ema = None
        if t.ema:
            from timm.utils import ModelEmaV2

            self.ema = ModelEmaV2(model, decay=t.ema_decay)
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        self.progress = Progress()
        self.fitness_warned = False  # the teacher-fitness warning is given once per run

    def _loaders(self, train_ds, val_ds):
        acc, t = self.acc, self.cfg.train
        pin = acc.device.type == "cuda"
        rank, world = acc.process_index, acc.num_processes
        t = cap_workers(t, acc.device.type, world)
        return (build_train_loader(train_ds, t, rank, world, pin),
                build_val_loader(val_ds, t.batch_size, rank, world, t.workers, pin))

    def _models(self):
        """(trained model, its kwargs, architecture name, frozen teacher or None), on the run's classes."""
        cfg, t = self.cfg, self.cfg.train
        if not self.distilled:
            model, kwargs = build_teacher(cfg.teacher.model, len(self.classes), cfg.teacher.checkpoint, t.drop_path,
                                          self.classes, field="teacher.checkpoint")
            return model, kwargs, cfg.teacher.model, None
        model, kwargs = build_student(cfg.student.model, len(self.classes), cfg.data.img_size, cfg.student.patch_size,
                                      t.drop_path, cfg.student.init, self.classes)
        model.set_distilled_training(True)
        teacher = None
        if cfg.distillation.type != "none":
            teacher, _ = build_teacher(cfg.teacher.model, len(self.classes), cfg.teacher.checkpoint, 0.0, self.classes)
            teacher = teacher.to(self.acc.device).eval().requires_grad_(False)
        return model, kwargs, cfg.student.model, teacher

    def weight_checksums(self) -> list[float]:
        """A float64 checksum of the weights from every rank: equal values mean the replicas did
        not drift apart (what DDP promises; cheap to check once at the end)."""
        params = self.acc.unwrap_model(self.model).state_dict().values()
        local = torch.stack([sum(p.double().sum() for p in params), sum(p.double().abs().sum() for p in params)])
        gathered = self.acc.gather(local.to(self.acc.device)[None])
        return [round(float(x), 9) for x in gathered[:, 0].tolist()]

    def val_images(self) -> int:
        """Val images over all ranks (the shards are disjoint and unequal when the count is odd)."""
        n = torch.tensor(len(self.val_loader.dataset), device=self.acc.device)
        return int(self.acc.reduce(n, reduction="sum"))

    # --- checkpoint state -------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        scaler = getattr(self.acc, "scaler", None)
        p = self.progress
        return {
            "model": self.acc.unwrap_model(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "ema": self.ema.module.state_dict() if self.ema is not None else None,
            "epoch": p.epoch, "num_updates": p.num_updates, "best_top1": p.best_top1, "metrics": dict(p.metrics),
            "rng": rng_state(), "config": self.cfg.to_dict(), "world_size": self.acc.num_processes,
            "architecture": self.architecture, "classes": self.classes,
        }

    def restore(self, path: Path) -> None:
        """Load ``path`` into the model, optimizer, schedule, EMA, RNGs and ``progress``.

        A changed schedule (``train.epochs``, ``lr``, ``min_lr``, ``warmup_epochs``, ``warmup_lr``)
        is honoured, not refused: the cosine schedule built from this config takes over at the
        resumed update (:func:`follow_schedule`), instead of the saved one silently going on with the
        old values. Extending a run (more epochs) or lowering a diverging lr is why people edit the
        config before resuming; refusing would leave only a fresh start, losing the epochs done.
        The lr then jumps to where the new schedule is at that update, which is what was asked for.

        Raises:
            ConfigError: another model or class list; another ``train.batch_size``
                (:func:`deit_core.checkpoint.batch_size_refusal`); fewer ``train.epochs`` than done;
                or (without ``allow_reshard``) another number of processes or ``train.accum_steps``,
                which would silently change the schedule.
        """
        state = load_checkpoint(path)
        if state.get("architecture") != self.architecture or state.get("classes") != self.classes:
            raise ConfigError("resume", f"{path} is a checkpoint of {state.get('architecture')} on classes "
                              f"{state.get('classes')}, not of this run's config")
        for name, refusal in (("train.batch_size", batch_size_refusal(state, self.cfg.train.batch_size)),
                              ("train.epochs", epochs_refusal(state, self.cfg.train.epochs))):
            if refusal:
                raise ConfigError(name, f"cannot resume {path}: {refusal}")
        changes = reshard_changes(state, self.acc.num_processes, self.cfg.train.accum_steps)
        if changes and not self.allow_reshard:
            raise ConfigError("resume", f"{path} was written with different {'; '.join(changes)}: the global batch, "
                              "the lr and the number of updates per epoch would change, so the resumed run would not "
                              "follow the original schedule. Resume with the same processes and train.accum_steps, "
                              "or pass --allow-reshard to continue anyway")
        if changes:
            log.warning("resuming across a reshard (%s): the schedule continues from update %d with the new layout",
                        "; ".join(changes), int(state["num_updates"]))
        self.acc.unwrap_model(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        new_schedule = schedule_changes(state, self.cfg.train)
        if not new_schedule:
            self.scheduler.load_state_dict(state["scheduler"])
        scaler = getattr(self.acc, "scaler", None)
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state.get("ema"):
            self.ema.module.load_state_dict(state["ema"])
        set_rng_state(state["rng"])
        self.progress.epoch, self.progress.num_updates = int(state["epoch"]), int(state["num_updates"])
        self.progress.best_top1 = float(state["best_top1"])
        self.progress.metrics = {k: float(v) for k, v in (state.get("metrics") or {}).items()}  # none before they were saved
        if new_schedule:
            follow_schedule(self.scheduler, self.optimizer, self.progress.num_updates)
            log.warning("resuming with a new schedule (%s): from update %d the lr follows this config's schedule "
                        "(now %.3g)", "; ".join(new_schedule), self.progress.num_updates,
                        self.optimizer.param_groups[0]["lr"])

    # --- the loop ---------------------------------------------------------------------------
    def resume_from_last(self) -> None:
        last = latest_valid(self.ckpt_dir)  # last.pt if its checksum matches, else last.prev.pt
        if last is None:
            raise ConfigError("resume", f"nothing to resume: no intact {LAST} or {PREV} in {self.ckpt_dir}")
        self.restore(last)
        log.info("resumed from %s at epoch %d", last, self.progress.epoch + 1)

    def run_epoch(self, epoch: int, teacher_preds: torch.Tensor | None, on_step) -> dict[str, float]:
        """Train one epoch and evaluate; returns the epoch's metrics (train loss/lr, val top-1/top-5...)."""
        t, acc, feed = self.cfg.train, self.acc, self.teacher_feed
        seed_epoch(t, epoch, acc.process_index)
        self.train_loader.sampler.set_epoch(epoch)
        if feed is not None:
            feed.begin_epoch(epoch, self.train_loader.sampler, len(self.train_loader), t.batch_size)
        train_stats, self.progress.num_updates = train_one_epoch(
            self.model, self.criterion, self.train_loader, self.optimizer, self.scheduler, acc, epoch,
            self.progress.num_updates, self.mixup_fn, self.ema, t.clip_grad, t.accum_steps, t.log_every, on_step,
            teacher_feed=feed)
        if feed is not None:
            feed.end_epoch(epoch)
        val = evaluate(self.model, self.val_loader, acc, self.distilled, teacher_preds)
        if self.ema is not None:
            val["val_top1_ema"] = evaluate(self.ema.module, self.val_loader, acc, self.distilled)["val_top1"]
        return {**train_stats, **val}

    def evaluate_resumed(self, teacher_preds: torch.Tensor | None, teacher_metrics: dict[str, float],
                         steps: int) -> dict[str, float]:
        """The final epoch's metrics for a run resumed from a checkpoint that has done every epoch
        (an attempt trained to the end, then died exporting): no epoch runs, yet the job must end with
        its top-1 and metric series. The restored weights -- exactly what ``final/`` and the export
        will hold -- are evaluated on val now, rather than trusting numbers carried over from an
        earlier attempt; the train-side stats (loss, lr) are the ones the checkpoint saved for that
        epoch (absent in a checkpoint from before they were saved). Emitted as the last epoch's event."""
        val = evaluate(self.model, self.val_loader, self.acc, self.distilled, teacher_preds)
        if self.ema is not None:
            val["val_top1_ema"] = evaluate(self.ema.module, self.val_loader, self.acc, self.distilled)["val_top1"]
        self.progress.best_top1 = max(self.progress.best_top1, val["val_top1"])
        metrics = {**self.progress.metrics, **val, **teacher_metrics, "best_top1": self.progress.best_top1}
        epochs = self.cfg.train.epochs
        self.events.emit("epoch", epoch=epochs, epochs=epochs, step=steps, steps_per_epoch=steps, eta_s=0.0,
                         evaluated_on_resume=True, **metrics)
        log.info("resumed after the last epoch: val top-1 of the restored weights %.2f", val["val_top1"])
        return metrics

    def warn_if_teacher_unfit(self, epoch: int, train_top1: float, val_top1: float | None) -> None:
        """Once per run: log and emit a ``warning`` event (field ``teacher``) when the teacher is often
        wrong on the student's training crops (deit_core/teacher_fitness.py says when and what to do)."""
        dist = self.cfg.distillation
        text = None if self.fitness_warned else fitness_warning(train_top1, val_top1, dist.type, dist.alpha)
        if text:
            self.fitness_warned = True
            log.warning("epoch %d: %s", epoch + 1, text)
            self.events.emit("warning", epoch=epoch + 1, field="teacher", message=text, teacher_train_top1=train_top1)

    def _open_teacher_feed(self, start_epoch: int, steps: int) -> TeacherFeed | None:
        """The teacher-output cache for this run (deit_core/teacher_cache/): None when it neither
        reads nor writes one, so the loss runs the teacher as it always did."""
        acc, t = self.acc, self.cfg.train
        layout = Layout(epochs=t.epochs, start_epoch=start_epoch, world=acc.num_processes, rank=acc.process_index,
                        steps=steps, batch_size=t.batch_size, num_classes=len(self.classes),
                        val_rows=self.val_images(), device_type=acc.device.type, precision=str(acc.mixed_precision))
        feed = open_feed(self.cfg, self.cache_options, layout, self.criterion.teacher_logits, self.events.emit,
                         self.out, acc.device)
        acc.wait_for_everyone()  # rank 0 made the partial folder that every rank writes into
        return feed if feed.reader is not None or feed.writer is not None else None

    def val_predictions(self) -> dict[str, Any]:
        """The final model's top-1 on every val image, as final/'s predictions file (deit_core/predictions.py).

        Every rank must call it (the shards are gathered). It is one more pass over val after the
        last epoch, with the weights final/ holds: the per-epoch evaluations keep no per-image state.
        """
        preds = predict_val(self.model, self.val_loader, self.acc, self.distilled)
        val_ds = self.val_loader.dataset.base  # the ImageFolder under the rank's shard
        return predictions_document("final", relative_images(val_ds.samples, val_ds.root),
                                    [label for _, label in val_ds.samples], preds, self.classes)

    def write_final(self, metrics: dict[str, float], val_predictions: dict[str, Any] | None = None) -> Path:
        """``final/``: weights plus everything export and serving need to rebuild and feed the model,
        and the val set's per-image predictions beside the metrics."""
        cfg = self.cfg
        meta = {
            "architecture": self.architecture, "model_kwargs": self.model_kwargs, "classes": self.classes,
            "img_size": cfg.data.img_size, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
            "crop_pct": cfg.data.crop_pct, "resize_size": resize_size(cfg.data.img_size, cfg.data.crop_pct),
            "interpolation": INTERPOLATION, "kind": "student" if self.distilled else "teacher",
            "distilled": self.distilled, "metrics": metrics, "config": cfg.to_dict(),
        }
        extra = {VAL_PREDICTIONS: val_predictions} if val_predictions is not None else None
        return save_final(self.out, self.acc.unwrap_model(self.model), meta, extra)

    def execute(self) -> dict[str, float]:
        cfg, acc, t, ev = self.cfg, self.acc, self.cfg.train, self.events
        if self.resume:
            self.resume_from_last()
        start_epoch = self.progress.epoch
        steps = len(self.train_loader)
        ev.emit("start", kind=cfg.kind, architecture=self.architecture, epochs=t.epochs, start_epoch=start_epoch,
                steps_per_epoch=steps, processes=acc.num_processes, device=str(acc.device),
                mixed_precision=acc.mixed_precision, global_batch=self.global_batch, lr=self.lr,
                classes=self.classes, train_images=len(self.train_loader.dataset), val_images=self.val_images(),
                resumed=self.resume, launch=launch_times())
        log.info("%s run: %s, %d classes, %d epochs x %d steps, %d process(es) on %s, global batch %d, lr %.2e",
                 cfg.kind, self.architecture, len(self.classes), t.epochs, steps, acc.num_processes, acc.device,
                 self.global_batch, self.lr)
        teacher_preds, teacher_metrics = None, {}
        if self.teacher is not None:
            self.teacher_feed = self._open_teacher_feed(start_epoch, steps)
            cached = self.teacher_feed.val() if self.teacher_feed is not None else None
            if cached is not None:
                teacher_preds, teacher_metrics = cached[0], {"teacher_top1": cached[1]}
            else:
                ev.emit("phase", phase="evaluating teacher")
                teacher_preds, teacher_metrics = predict_teacher(self.teacher, self.val_loader, acc)
                if self.teacher_feed is not None:
                    self.teacher_feed.record_val(teacher_preds, teacher_metrics["teacher_top1"])
            log.info("teacher val top-1: %.2f", teacher_metrics["teacher_top1"])
            ev.emit("teacher", **teacher_metrics)
        metrics: dict[str, float] = {}
        run_start = time.perf_counter()
        total_steps = (t.epochs - start_epoch) * steps
        for epoch in range(start_epoch, t.epochs):
            done_before = (epoch - start_epoch) * steps

            check_lease(self.out)  # a run whose worker is gone stops here (see deit_core/lease.py)

            def on_step(s: dict[str, Any], epoch: int = epoch, done_before: int = done_before) -> None:
                check_lease(self.out)
                remaining = total_steps - done_before - s["step"]
                ev.emit("step", epoch=epoch + 1, epochs=t.epochs, step=s["step"], steps_per_epoch=steps,
                        loss=s["loss"], lr=s["lr"], img_per_s=s["img_per_s"], eta_s=round(remaining * s["s_per_step"], 1))

            epoch_metrics = self.run_epoch(epoch, teacher_preds, on_step)
            if "teacher_train_top1" in epoch_metrics:
                self.warn_if_teacher_unfit(epoch, epoch_metrics["teacher_train_top1"], teacher_metrics.get("teacher_top1"))
            is_best = epoch_metrics["val_top1"] > self.progress.best_top1
            self.progress.best_top1 = max(self.progress.best_top1, epoch_metrics["val_top1"])
            self.progress.epoch = epoch + 1
            self.progress.metrics = {k: float(v) for k, v in epoch_metrics.items()}
            elapsed = time.perf_counter() - run_start
            done = (epoch + 1 - start_epoch) * steps
            metrics = {**epoch_metrics, **teacher_metrics, "best_top1": self.progress.best_top1}
            ev.emit("epoch", epoch=epoch + 1, epochs=t.epochs, step=steps, steps_per_epoch=steps,
                    eta_s=round(elapsed / done * (total_steps - done), 1), **metrics)
            log.info("epoch %d/%d: loss %.4f, val top-1 %.2f (best %.2f)%s", epoch + 1, t.epochs, metrics["loss"],
                     metrics["val_top1"], self.progress.best_top1,
                     f", agreement with teacher {metrics['val_agreement']:.1f}%" if "val_agreement" in metrics else "")
            if acc.is_main_process:
                path = save_checkpoint(self.ckpt_dir, self.state(), is_best)
                ev.emit("checkpoint", epoch=epoch + 1, path=str(path), best=is_best)
            acc.wait_for_everyone()
        if start_epoch >= t.epochs:  # resumed with no epoch left: the metrics of the weights it ends with
            metrics = self.evaluate_resumed(teacher_preds, teacher_metrics, steps)
        if self.teacher_feed is not None:
            self.teacher_feed.finish(acc)
        checksums = self.weight_checksums()
        val_predictions = self.val_predictions()
        if acc.is_main_process:
            final = self.write_final(metrics, val_predictions)
            ev.emit("done", final=str(final), rank_weight_checksums=checksums, **metrics)
            log.info("done: final model in %s", final)
        acc.wait_for_everyone()
        return metrics


def build_optimization(model: torch.nn.Module, t: TrainConfig, global_batch: int, updates_per_epoch: int):
    """AdamW and DeiT's per-update cosine schedule; returns (optimizer, scheduler, peak lr).

    As in DeiT's main.py, only ``lr`` scales with the global batch (``lr * batch / 512``);
    ``min_lr`` and ``warmup_lr`` are absolute values.
    """
    from timm.optim import create_optimizer_v2
    from timm.scheduler import CosineLRScheduler

    lr = t.lr * global_batch / 512.0
    # torch's fused AdamW (one kernel over all parameters, on CPU too since torch 2.4): the same
    # update as the per-parameter loop, 14.4 -> 4.3 ms a step for DeiT-Ti on 2 cores, which is
    # 2-3% of a small-image step (issue 22: at least as fast as the reference DeiT code).
    optimizer = create_optimizer_v2(model, "adamw", lr=lr, weight_decay=t.weight_decay, fused=True)
    scheduler = CosineLRScheduler(
        optimizer, t_initial=t.epochs * updates_per_epoch, lr_min=t.min_lr,
        warmup_t=t.warmup_epochs * updates_per_epoch, warmup_lr_init=t.warmup_lr, t_in_epochs=False)
    return optimizer, scheduler, lr


def follow_schedule(scheduler, optimizer, num_updates: int) -> None:
    """Make a freshly built ``scheduler`` (from this config) drive an optimizer whose state was
    loaded from a checkpoint: the loaded param groups carry the old run's ``initial_lr``, so it is
    set to the new schedule's base lr, and the lr to where the new schedule is at ``num_updates``."""
    for group, base in zip(optimizer.param_groups, scheduler.base_values):
        group["initial_lr"] = base
    scheduler.step_update(num_updates)


def log_placement(rank: int, world: int) -> None:
    """Every rank says where it runs (to stderr, which torchrun and srun collect into the run's log),
    so a multi-node run's log shows each node's ranks; under Slurm the node name is Slurm's."""
    slurm_node = os.environ.get("SLURMD_NODENAME")
    log.info("rank %d of %d on host %s (node rank %s%s)", rank, world, socket.gethostname(),
             os.environ.get("GROUP_RANK", "0"), f", Slurm node {slurm_node}" if slurm_node else "")


ENTERED: dict[str, float] = {}  # when run_from_args began, after this process's imports


def process_started(pid: int) -> float | None:
    """When process ``pid`` was created, on ``time.time()``'s clock to 10 ms: its age from
    ``/proc`` subtracted from now (psutil adds the boot time, which Linux gives in whole seconds, so
    its value can be up to a second off the wall clock the other marks use). None off Linux."""
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return round(time.time() - (uptime - ticks / os.sysconf("SC_CLK_TCK")), 3)


def launch_times() -> dict[str, Any]:
    """When this rank's launcher (torchrun, the warm-start leader, or none) and this rank were created
    and when the engine was entered, in the ``start`` event: ``benchmarks/launch_latency.py`` splits
    a run's start into spawn, imports and the rest with these."""
    return {"launcher_started": process_started(os.getppid()), "rank_started": process_started(os.getpid()),
            "entered": round(ENTERED.get("time", time.time()), 3),
            "launcher": os.environ.get(LAUNCHER_VARIABLE) or ("torchrun" if "TORCHELASTIC_RUN_ID" in os.environ else None)}


def run(cfg: JobConfig, out: Path, resume: bool = False, allow_reshard: bool = False,
        cache: CacheOptions | None = None) -> dict[str, float]:
    """Run training in this process (one rank of many under torchrun); a teacher_outputs job
    fills the teacher-output cache instead (deit_core/teacher_outputs.py)."""
    acc = make_accelerator(cfg)
    log_placement(acc.process_index, acc.num_processes)
    events = MetricsLog(out / METRICS_FILE if acc.is_main_process else None)
    try:
        if cfg.kind == "teacher_outputs":
            return fill_cache(cfg, out, events, acc, cache or CacheOptions())
        return Run(cfg, out, resume, events, acc, allow_reshard, cache).execute()
    finally:
        events.close()


def _record_for_torchrun(e: BaseException) -> None:
    """Write this rank's exception to torchrun's per-rank error file (``TORCHELASTIC_ERROR_FILE``,
    what the ``record`` decorator does), so torchrun's failure summary, which the worker reads for
    the job's reason, shows it for every rank, not only rank 0's metrics error event."""
    if os.environ.get("TORCHELASTIC_ERROR_FILE"):
        from torch.distributed.elastic.multiprocessing.errors import get_error_handler

        try:
            get_error_handler().record_exception(e)
        except Exception:  # noqa: BLE001 - the report must never hide the failure itself
            log.warning("could not write torchrun's error file", exc_info=True)


def run_from_args(config: str, output: str, resume: bool = False, allow_reshard: bool = False,
                  cache: CacheOptions | None = None) -> int:
    """Entry point shared by ``distillery train`` and ``python -m deit_core.train``; returns the exit code."""
    ENTERED["time"] = time.time()
    out = Path(output)
    main = _rank() == 0
    out.mkdir(parents=True, exist_ok=True)
    _setup_logging(out, main)
    code, message = EXIT_OK, None
    try:
        cfg = load_config_file(config)
        run(cfg, out, resume, allow_reshard, cache)
    except ConfigError as e:
        code, message = EXIT_BAD_CONFIG, str(e)
        field = e.field
    except Exception as e:  # noqa: BLE001 - any failure becomes an error event and a non-zero exit
        code, message, field = EXIT_FAILED, f"{type(e).__name__}: {e}", None
        log.error("run failed:\n%s", traceback.format_exc())
        _record_for_torchrun(e)
    if code:
        log.error("error: %s", message)
        print(f"error: {message}", file=sys.stderr)
        if main:
            MetricsLog(out / METRICS_FILE).emit("error", message=message, field=field, exit_code=code)
    return code


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deit_core.train", description="One distillery training run.")
    p.add_argument("--config", required=True, help="job config, YAML or JSON")
    p.add_argument("--output", required=True, help="run directory")
    add_resume_arguments(p)
    add_cache_arguments(p)
    args = p.parse_args(argv)
    return run_from_args(args.config, args.output, args.resume, args.allow_reshard, cache_options(args))


def cache_options(args: argparse.Namespace) -> CacheOptions:
    return CacheOptions(Path(args.teacher_cache_dir) if args.teacher_cache_dir else None, args.teacher_cache_max_bytes)


if __name__ == "__main__":
    sys.exit(main())
