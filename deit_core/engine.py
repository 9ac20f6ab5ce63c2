"""Training and evaluation loops (DeiT's ``engine.py``, on Accelerate).

``train_one_epoch`` and ``evaluate`` take what they use and return dicts of averaged metrics; the
same code runs on one CPU process, under ``torchrun`` with gloo, or on many GPUs. ``predict_val``
gathers every rank's per-image top-1 into one list in val-set order, for the predictions file that
lets two runs be compared image by image (deit_core/predictions.py).
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from .losses import TeacherTargets


@dataclass
class StepTimer:
    """Throughput and ETA over the steps since the last report."""

    global_batch: int
    started: float = field(default_factory=time.perf_counter)
    steps: int = 0
    total_time: float = 0.0
    total_steps: int = 0

    def tick(self) -> None:
        self.steps += 1

    def window(self) -> tuple[float, float]:
        """Close the window: (img/s within it, mean seconds per step since the start)."""
        now = time.perf_counter()
        dt = now - self.started
        ips = self.steps * self.global_batch / dt if dt > 0 else 0.0
        self.total_time += dt
        self.total_steps += self.steps
        self.started, self.steps = now, 0
        return ips, self.total_time / max(self.total_steps, 1)


def accumulation_window(step: int, steps: int, accum_steps: int) -> int:
    """How many micro-batches the update that ``step`` (1-based) belongs to averages over.

    ``accum_steps`` except for a short last window of the epoch (``steps % accum_steps`` of them):
    dividing that one by ``accum_steps`` too would scale its gradient down (0.5x for 1 of 2).
    """
    window_start = (step - 1) // accum_steps * accum_steps  # micro-batches before this window
    return min(accum_steps, steps - window_start)


def train_one_epoch(model: nn.Module, criterion: nn.Module, loader, optimizer, scheduler, accelerator,
                    epoch: int, num_updates: int, mixup_fn=None, ema=None, clip_grad: float | None = None, accum_steps: int = 1,
                    log_every: int = 10, on_step: Callable[[dict[str, Any]], None] | None = None,
                    teacher_feed=None) -> tuple[dict[str, float], int]:
    """One pass over ``loader``. Returns (averaged metrics, number of optimizer updates so far).

    ``on_step`` receives a dict (step, loss, lr, img_per_s, s_per_step) every ``log_every`` steps
    and after the last step, for progress events. ``teacher_feed`` (deit_core.teacher_cache.TeacherFeed)
    gives each batch's teacher outputs, from the cache when it holds them; without it the teacher
    runs here, once per batch, and its outputs go to the loss (as the cache's do).

    When a teacher takes part, the metrics add ``teacher_train_top1``: the teacher's top-1 on the
    very inputs the student trains on (see :func:`teacher_hits`), from the outputs the loss uses
    (no extra teacher forward), summed over all processes.
    """
    model.train()
    device = accelerator.device
    steps = len(loader)
    timer = StepTimer(global_batch=loader.batch_size * accelerator.num_processes)
    loss_sum = torch.zeros((), device=device)
    teacher_right, teacher_seen = torch.zeros((), device=device), torch.zeros((), device=device)
    seen = 0
    for step, (images, labels) in enumerate(loader, start=1):
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        sample_labels = labels  # before mixup: what the cache checks its rows against
        if mixup_fn is not None:
            images, labels = mixup_fn(images, labels)
        # Accumulation is counted within the epoch (the last step always updates), so no gradient
        # leaks into the next epoch and a resumed run updates exactly where the original did.
        update = step % accum_steps == 0 or step == steps
        with contextlib.nullcontext() if update else accelerator.no_sync(model):
            with accelerator.autocast():
                outputs = model(images)
                teacher = batch_teacher_targets(criterion, teacher_feed, step, images, sample_labels)
                loss = criterion(images, outputs, labels, teacher)
            if teacher is not None:
                teacher_right += teacher_hits(teacher.argmax, labels)
                teacher_seen += labels.shape[0]
            accelerator.backward(loss / accumulation_window(step, steps, accum_steps))
        if update:
            if clip_grad is not None:
                accelerator.clip_grad_norm_(model.parameters(), clip_grad)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            num_updates += 1
            scheduler.step_update(num_updates)
            if ema is not None:
                ema.update(accelerator.unwrap_model(model))
        loss_sum += loss.detach()
        seen += 1
        timer.tick()
        if step % log_every == 0 or step == steps:
            # Checked where the loop syncs anyway, not every step (a per-step check stalls a GPU);
            # a diverged run still stops before its epoch's checkpoint is written.
            if not torch.isfinite(loss_sum):
                raise FloatingPointError(f"the loss became {float(loss_sum)} by epoch {epoch + 1} step {step}; "
                                         "lower train.lr or set train.clip_grad")
        if on_step is not None and (step % log_every == 0 or step == steps):
            ips, s_per_step = timer.window()
            on_step({"step": step, "loss": float(loss.detach()), "lr": optimizer.param_groups[0]["lr"],
                     "img_per_s": ips, "s_per_step": s_per_step})
    mean_loss = accelerator.reduce(loss_sum / max(seen, 1), reduction="mean")
    stats = {"loss": float(mean_loss), "lr": optimizer.param_groups[0]["lr"]}
    if teacher_active(criterion, teacher_feed):  # the same on every rank, so every rank joins the reduce
        right = accelerator.reduce(teacher_right, reduction="sum")
        total = accelerator.reduce(teacher_seen, reduction="sum")
        stats["teacher_train_top1"] = float(100.0 * right / total.clamp(min=1))
    return stats, num_updates


def teacher_active(criterion: nn.Module, teacher_feed=None) -> bool:
    """Whether the loss uses a teacher's outputs (a distillation loss of type hard or soft)."""
    return teacher_feed is not None or (getattr(criterion, "teacher", None) is not None
                                        and getattr(criterion, "type", "none") != "none")


def batch_teacher_targets(criterion: nn.Module, teacher_feed, step: int, images: torch.Tensor,
                          sample_labels: torch.Tensor) -> TeacherTargets | None:
    """The teacher's outputs for this batch, which the loss then uses: from the feed (cache or live)
    when there is one, else one forward of the loss's own teacher here. Running it here rather than
    inside the loss is the same single forward; it lets the loop score it (``teacher_train_top1``)."""
    if teacher_feed is not None:
        return teacher_feed.targets(step, images, sample_labels)
    if not teacher_active(criterion):
        return None
    logits = criterion.teacher_logits(images)
    return TeacherTargets(logits=logits, argmax=logits.argmax(dim=1))


def teacher_hits(teacher_argmax: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """How many of the batch's teacher predictions match its label (a 0-d tensor, not synced).

    ``labels`` are what the student's loss sees: class indices, or with mixup/cutmix the mixed
    (and smoothed) target rows, which are scored against their *dominant* label, the class with
    the largest weight (the image that covers more of the mixed crop; on an exact 50/50 tie the
    lower class index). So this is the teacher's top-1 on the student's actual augmented, mixed
    training inputs: what hard distillation copies as its label.
    """
    dominant = labels.argmax(dim=1) if labels.ndim == 2 else labels
    return (teacher_argmax.to(dominant.device) == dominant).sum()


def _topk_correct(logits: torch.Tensor, target: torch.Tensor, ks=(1, 5)) -> list[torch.Tensor]:
    k_max = min(max(ks), logits.shape[1])
    pred = logits.topk(k_max, dim=1).indices
    hit = pred.eq(target[:, None])
    return [hit[:, :min(k, k_max)].any(dim=1).sum() for k in ks]


def student_heads(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The class-token and distillation-token logits of a timm distilled DeiT, in eval mode."""
    feats = model.forward_features(images)
    return model.head(feats[:, 0]), model.head_dist(feats[:, 1])


def deit_logits(net: nn.Module, images: torch.Tensor, distilled: bool):
    """(prediction logits, class-head logits, distillation-head logits); the prediction of a distilled
    student is the average of its two heads, as in DeiT; a plain model has no heads (None, None)."""
    if not distilled:
        return net(images), None, None
    cls_logits, dist_logits = student_heads(net, images)
    return (cls_logits + dist_logits) / 2, cls_logits, dist_logits


@torch.inference_mode()
def predict_teacher(teacher: nn.Module, loader, accelerator) -> tuple[torch.Tensor, dict[str, float]]:
    """Teacher argmax on this rank's val shard (cached for agreement) and its own top-1 over all ranks."""
    teacher.eval()
    preds, correct, total = [], torch.zeros((), device=accelerator.device), torch.zeros((), device=accelerator.device)
    for images, labels in loader:
        images, labels = images.to(accelerator.device), labels.to(accelerator.device)
        with accelerator.autocast():
            p = teacher(images).argmax(dim=1)
        preds.append(p)
        correct += (p == labels).sum()
        total += labels.numel()
    correct = accelerator.reduce(correct, reduction="sum")
    total = accelerator.reduce(total, reduction="sum")
    cat = torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long, device=accelerator.device)
    return cat, {"teacher_top1": float(100.0 * correct / total.clamp(min=1))}


@torch.inference_mode()
def evaluate(model: nn.Module, loader, accelerator, distilled: bool,
             teacher_preds: torch.Tensor | None = None) -> dict[str, float]:
    """Top-1/top-5 of the DeiT prediction (average of both heads) and, for a distilled student, of
    each head alone; with ``teacher_preds``, the share of images where student and teacher agree.

    Counts are summed over ranks; each rank holds a disjoint shard, so the result is exact.
    """
    net = accelerator.unwrap_model(model)
    net.eval()
    dev = accelerator.device
    names = (["top1", "top5"] + (["top1_cls", "top1_dist"] if distilled else [])
             + (["agreement"] if teacher_preds is not None else []))
    sums = {n: torch.zeros((), device=dev) for n in names}
    total = torch.zeros((), device=dev)
    offset = 0
    for images, labels in loader:
        images, labels = images.to(dev), labels.to(dev)
        with accelerator.autocast():
            logits, cls_logits, dist_logits = deit_logits(net, images, distilled)
        top1, top5 = _topk_correct(logits.float(), labels)
        sums["top1"] += top1
        sums["top5"] += top5
        if distilled:
            sums["top1_cls"] += (cls_logits.argmax(1) == labels).sum()
            sums["top1_dist"] += (dist_logits.argmax(1) == labels).sum()
        if teacher_preds is not None:
            tp = teacher_preds[offset: offset + labels.numel()]
            sums["agreement"] += (logits.argmax(1) == tp).sum()
        offset += labels.numel()
        total += labels.numel()
    total = accelerator.reduce(total, reduction="sum").clamp(min=1)
    return {f"val_{n}": float(100.0 * accelerator.reduce(v, reduction="sum") / total) for n, v in sums.items()}


def _shard_indices(loader) -> list[int]:
    """The val-set positions of this rank's shard, in the order its loader yields them
    (deit_core.data.build_val_loader's ``indices``; the whole set when the loader is not sharded)."""
    indices = getattr(loader.dataset, "indices", None)
    return list(indices) if indices is not None else list(range(len(loader.dataset)))


@torch.inference_mode()
def predict_val(model: nn.Module, loader, accelerator, distilled: bool) -> list[int]:
    """Top-1 class of every val image, in val-set order, on every rank (a collective: call it on all).

    The prediction is ``evaluate``'s (the average of both heads of a distilled student), so its top-1
    equals ``val_top1``. Each rank predicts its shard (``indices[rank::world]``, no padding); rows of
    (val index, class) are padded to the longest shard with -1, gathered, and put back in order, so
    an odd number of images over two processes comes back exactly once each.
    """
    net = accelerator.unwrap_model(model)
    net.eval()
    dev = accelerator.device
    preds = []
    for images, _ in loader:
        images = images.to(dev)
        with accelerator.autocast():
            logits = deit_logits(net, images, distilled)[0]
        preds.append(logits.float().argmax(1))
    local_preds = torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long, device=dev)
    index = torch.tensor(_shard_indices(loader), dtype=torch.long, device=dev)
    if len(index) != len(local_preds):
        raise RuntimeError(f"the val loader yielded {len(local_preds)} images for a shard of {len(index)}")
    rows = torch.stack([index, local_preds.long()], dim=1) if len(index) else torch.zeros(0, 2, dtype=torch.long, device=dev)
    rows = accelerator.gather(accelerator.pad_across_processes(rows, dim=0, pad_index=-1)).cpu()
    rows = rows[rows[:, 0] >= 0]
    order = rows[:, 0].argsort()
    rows = rows[order]
    if len(rows) and not torch.equal(rows[:, 0], torch.arange(len(rows))):
        raise RuntimeError("the val shards do not cover each image exactly once")
    return rows[:, 1].tolist()
