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
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from .checkpoint import LAST, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import ConfigError, JobConfig, load_config_file
from .data import IMAGENET_MEAN, IMAGENET_STD, INTERPOLATION, build_train_loader, build_val_loader, load_datasets
from .engine import evaluate, predict_teacher, train_one_epoch
from .events import MetricsLog
from .losses import DistillationLoss, base_criterion
from .models import build_student, build_teacher, save_final

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
        handlers.append(logging.FileHandler(out / "train.log"))
    for h in handlers:
        h.setFormatter(fmt)
        h.addFilter(_RankFilter())
        root.addHandler(h)


class Run:
    """Everything a run holds; ``execute`` is the epoch loop."""

    def __init__(self, cfg: JobConfig, out: Path, resume: bool, events: MetricsLog, accelerator):
        self.cfg, self.out, self.resume, self.events, self.acc = cfg, out, resume, events, accelerator

    def build(self) -> None:
        cfg, acc, t = self.cfg, self.acc, self.cfg.train
        from accelerate.utils import set_seed

        set_seed(t.seed)
        with acc.main_process_first():
            train_ds, val_ds, self.classes = load_datasets(cfg.data, t)
        nc = len(self.classes)
        pin = acc.device.type == "cuda"
        rank, world = acc.process_index, acc.num_processes
        t = self._cap_workers(t, acc.device.type, world)
        self.train_loader = build_train_loader(train_ds, t, rank, world, pin)
        self.val_loader = build_val_loader(val_ds, t.batch_size, rank, world, t.workers, pin)
        self.distilled = cfg.kind == "distill"
        self.teacher = None
        if self.distilled:
            model, self.model_kwargs = build_student(cfg.student.model, nc, cfg.data.img_size, cfg.student.patch_size,
                                                     t.drop_path, cfg.student.init, self.classes)
            model.set_distilled_training(True)
            self.architecture = cfg.student.model
            if cfg.distillation.type != "none":
                teacher, _ = build_teacher(cfg.teacher.model, nc, cfg.teacher.checkpoint, 0.0, self.classes)
                self.teacher = teacher.to(acc.device).eval().requires_grad_(False)
        else:
            model, self.model_kwargs = build_teacher(cfg.teacher.model, nc, cfg.teacher.checkpoint, t.drop_path,
                                                     self.classes, field="teacher.checkpoint")
            self.architecture = cfg.teacher.model

        from timm.data import Mixup
        from timm.optim import create_optimizer_v2
        from timm.scheduler import CosineLRScheduler

        self.mixup_fn = None
        if t.mixup > 0 or t.cutmix > 0:
            self.mixup_fn = Mixup(mixup_alpha=t.mixup, cutmix_alpha=t.cutmix, label_smoothing=t.smoothing, num_classes=nc)
        base = base_criterion(self.mixup_fn is not None, t.smoothing)
        dist = cfg.distillation
        self.criterion = DistillationLoss(base, self.teacher, dist.type if dist else "none",
                                          dist.alpha if dist else 0.0, dist.tau if dist else 1.0)
        self.global_batch = t.batch_size * world * t.accum_steps
        self.lr = t.lr * self.global_batch / 512.0
        optimizer = create_optimizer_v2(model, "adamw", lr=self.lr, weight_decay=t.weight_decay)
        self.updates_per_epoch = math.ceil(len(self.train_loader) / t.accum_steps)
        self.scheduler = CosineLRScheduler(
            optimizer, t_initial=t.epochs * self.updates_per_epoch, lr_min=t.min_lr * self.global_batch / 512.0,
            warmup_t=t.warmup_epochs * self.updates_per_epoch, warmup_lr_init=t.warmup_lr, t_in_epochs=False)
        model = model.to(acc.device)
        self.ema = None
        if t.ema:
            from timm.utils import ModelEmaV2

            self.ema = ModelEmaV2(model, decay=t.ema_decay)
        self.model, self.optimizer = acc.prepare(model, optimizer)

    @staticmethod
    def _cap_workers(t, device_type: str, world: int):
        """On CPU, loader workers compete with the training threads for the same cores; spinning
        OpenMP threads then starve them (seen: 10x slower steps on 2 cores). Keep only spare cores."""
        if device_type != "cpu" or t.workers == 0:
            return t
        spare = max((os.cpu_count() or 1) - world * torch.get_num_threads(), 0) // world
        if spare < t.workers:
            log.info("using %d loader worker(s) instead of %d: no spare CPU cores beside %d training thread(s) x %d process(es)",
                     spare, t.workers, torch.get_num_threads(), world)
            import dataclasses

            t = dataclasses.replace(t, workers=spare)
        return t

    def weight_checksums(self) -> list[float]:
        """A float64 checksum of the weights from every rank: equal values mean the replicas did
        not drift apart (what DDP promises; cheap to check once at the end)."""
        params = self.acc.unwrap_model(self.model).state_dict().values()
        local = torch.stack([sum(p.double().sum() for p in params), sum(p.double().abs().sum() for p in params)])
        gathered = self.acc.gather(local.to(self.acc.device)[None])
        return [round(float(x), 9) for x in gathered[:, 0].tolist()]

    # --- checkpoint state -------------------------------------------------------------------
    def state(self, epoch: int, num_updates: int, best: float) -> dict[str, Any]:
        scaler = getattr(self.acc, "scaler", None)
        return {
            "model": self.acc.unwrap_model(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "ema": self.ema.module.state_dict() if self.ema is not None else None,
            "epoch": epoch, "num_updates": num_updates, "best_top1": best,
            "rng": rng_state(), "config": self.cfg.to_dict(), "world_size": self.acc.num_processes,
            "architecture": self.architecture, "classes": self.classes,
        }

    def restore(self, path: Path) -> tuple[int, int, float]:
        state = load_checkpoint(path)
        if state.get("architecture") != self.architecture or state.get("classes") != self.classes:
            raise ConfigError("resume", f"{path} is a checkpoint of {state.get('architecture')} on classes "
                              f"{state.get('classes')}, not of this run's config")
        self.acc.unwrap_model(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        scaler = getattr(self.acc, "scaler", None)
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state.get("ema"):
            self.ema.module.load_state_dict(state["ema"])
        set_rng_state(state["rng"])
        return int(state["epoch"]), int(state["num_updates"]), float(state["best_top1"])

    # --- the loop ---------------------------------------------------------------------------
    def execute(self) -> dict[str, float]:
        from accelerate.utils import set_seed

        cfg, acc, t, ev = self.cfg, self.acc, self.cfg.train, self.events
        ckpt_dir = self.out / "checkpoints"
        start_epoch, num_updates, best = 0, 0, -1.0
        if self.resume:
            last = ckpt_dir / LAST
            if not last.exists():
                raise ConfigError("resume", f"nothing to resume: {last} does not exist")
            start_epoch, num_updates, best = self.restore(last)
            log.info("resumed from %s at epoch %d", last, start_epoch + 1)
        steps = len(self.train_loader)
        ev.emit("start", kind=cfg.kind, architecture=self.architecture, epochs=t.epochs, start_epoch=start_epoch,
                steps_per_epoch=steps, processes=acc.num_processes, device=str(acc.device),
                mixed_precision=acc.mixed_precision, global_batch=self.global_batch, lr=self.lr,
                classes=self.classes, train_images=len(self.train_loader.dataset), val_images=len(self.val_loader.dataset) * acc.num_processes,
                resumed=self.resume)
        log.info("%s run: %s, %d classes, %d epochs x %d steps, %d process(es) on %s, global batch %d, lr %.2e",
                 cfg.kind, self.architecture, len(self.classes), t.epochs, steps, acc.num_processes, acc.device,
                 self.global_batch, self.lr)
        teacher_preds, teacher_metrics = None, {}
        if self.teacher is not None:
            teacher_preds, teacher_metrics = predict_teacher(self.teacher, self.val_loader, acc)
            log.info("teacher val top-1: %.2f", teacher_metrics["teacher_top1"])
            ev.emit("teacher", **teacher_metrics)
        metrics: dict[str, float] = {}
        run_start = time.perf_counter()
        total_steps = (t.epochs - start_epoch) * steps
        for epoch in range(start_epoch, t.epochs):
            # Every source of randomness in the epoch is a function of (seed, epoch): see data.py.
            set_seed(t.seed + 1000 * epoch + acc.process_index)
            self.train_loader.sampler.set_epoch(epoch)
            done_before = (epoch - start_epoch) * steps

            def on_step(s: dict[str, Any], epoch: int = epoch, done_before: int = done_before) -> None:
                remaining = total_steps - done_before - s["step"]
                ev.emit("step", epoch=epoch + 1, epochs=t.epochs, step=s["step"], steps_per_epoch=steps,
                        loss=s["loss"], lr=s["lr"], img_per_s=s["img_per_s"], eta_s=round(remaining * s["s_per_step"], 1))

            train_stats, num_updates = train_one_epoch(
                self.model, self.criterion, self.train_loader, self.optimizer, self.scheduler, acc, epoch, num_updates,
                self.mixup_fn, self.ema, t.clip_grad, t.accum_steps, t.log_every, on_step)
            val = evaluate(self.model, self.val_loader, acc, self.distilled, teacher_preds)
            if self.ema is not None:
                val["val_top1_ema"] = evaluate(self.ema.module, self.val_loader, acc, self.distilled)["val_top1"]
            is_best = val["val_top1"] > best
            best = max(best, val["val_top1"])
            elapsed = time.perf_counter() - run_start
            done = (epoch + 1 - start_epoch) * steps
            metrics = {**train_stats, **val, **teacher_metrics, "best_top1": best}
            ev.emit("epoch", epoch=epoch + 1, epochs=t.epochs, step=steps, steps_per_epoch=steps,
                    eta_s=round(elapsed / done * (total_steps - done), 1), **metrics)
            log.info("epoch %d/%d: loss %.4f, val top-1 %.2f (best %.2f)%s", epoch + 1, t.epochs, train_stats["loss"],
                     val["val_top1"], best, f", agreement with teacher {val['val_agreement']:.1f}%" if "val_agreement" in val else "")
            if acc.is_main_process:
                path = save_checkpoint(ckpt_dir, self.state(epoch + 1, num_updates, best), is_best)
                ev.emit("checkpoint", epoch=epoch + 1, path=str(path), best=is_best)
            acc.wait_for_everyone()
        checksums = self.weight_checksums()
        if acc.is_main_process:
            meta = {
                "architecture": self.architecture, "model_kwargs": self.model_kwargs, "classes": self.classes,
                "img_size": cfg.data.img_size, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
                "crop_pct": 1.0, "interpolation": INTERPOLATION,
                "kind": "student" if self.distilled else "teacher", "distilled": self.distilled,
                "metrics": metrics, "config": cfg.to_dict(),
            }
            final = save_final(self.out, self.acc.unwrap_model(self.model), meta)
            ev.emit("done", final=str(final), rank_weight_checksums=checksums, **metrics)
            log.info("done: final model in %s", final)
        acc.wait_for_everyone()
        return metrics


def run(cfg: JobConfig, out: Path, resume: bool = False) -> dict[str, float]:
    """Run training in this process (one rank of many under torchrun)."""
    acc = make_accelerator(cfg)
    events = MetricsLog(out / "metrics.jsonl" if acc.is_main_process else None)
    try:
        r = Run(cfg, out, resume, events, acc)
        r.build()
        return r.execute()
    finally:
        events.close()


def run_from_args(config: str, output: str, resume: bool = False) -> int:
    """Entry point shared by ``distillery train`` and ``python -m deit_core.train``; returns the exit code."""
    out = Path(output)
    main = _rank() == 0
    out.mkdir(parents=True, exist_ok=True)
    _setup_logging(out, main)
    code, message = 0, None
    try:
        cfg = load_config_file(config)
        run(cfg, out, resume)
    except ConfigError as e:
        code, message = 2, str(e)
        field = e.field
    except Exception as e:  # noqa: BLE001 - any failure becomes an error event and a non-zero exit
        code, message, field = 1, f"{type(e).__name__}: {e}", None
        log.error("run failed:\n%s", traceback.format_exc())
    if code:
        log.error("error: %s", message)
        print(f"error: {message}", file=sys.stderr)
        if main:
            MetricsLog(out / "metrics.jsonl").emit("error", message=message, field=field, exit_code=code)
    return code


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deit_core.train", description="One distillery training run.")
    p.add_argument("--config", required=True, help="job config, YAML or JSON")
    p.add_argument("--output", required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT/checkpoints/last.pt")
    args = p.parse_args(argv)
    return run_from_args(args.config, args.output, args.resume)


if __name__ == "__main__":
    sys.exit(main())
