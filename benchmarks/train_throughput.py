"""Where does a distillation step's time go? Images/s of the student step, the teacher forward,
the full distillation step, and the real data loader, side by side in one run.

(a) the student's training step alone (forward, loss on both heads, backward, AdamW step);
(b) the teacher's forward alone (inference mode, same precision);
(c) the full distillation step, through the engine's own ``train_one_epoch``;
ideal = 1 / (1/a + 1/b): the best (c) can be if nothing but the two models costs time.
The loader row is ``build_train_loader`` on a real ImageFolder with the DeiT train transform.

    python benchmarks/train_throughput.py --img-size 32 --patch-size 8 --batch-size 64
    python benchmarks/train_throughput.py --device cuda --student deit_small_distilled_patch16_224 \
        --teacher regnety_160 --img-size 224 --batch-size 256 --precision bf16 --peak-tflops 989
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from torch import nn


class RepeatBatches:
    """Pre-made batches already on the device, so (a) and (c) time the models and not the loader."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, steps: int):
        self.images, self.labels, self.steps, self.batch_size = images, labels, steps, images.shape[0]

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        for _ in range(self.steps):
            yield self.images, self.labels


def timed(fn, warmup: int, sync) -> float:
    fn(warmup)
    sync()
    t0 = time.perf_counter()
    n = fn(None)
    sync()
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--student", default="deit_tiny_distilled_patch16_224")
    ap.add_argument("--teacher", default="regnety_002")
    ap.add_argument("--img-size", type=int, default=32)
    ap.add_argument("--patch-size", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--precision", default="no", choices=["no", "bf16", "fp16"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--data", help="ImageFolder root with train/ for the loader row "
                                   "(default: digits written to var/bench/loader)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="device peak for model FLOP utilization (H100 SXM bf16 dense: 989)")
    args = ap.parse_args()

    from accelerate import Accelerator
    from timm.optim import create_optimizer_v2
    from timm.scheduler import CosineLRScheduler

    from deit_core.config import TrainConfig
    from deit_core.data import SyntheticDataset, build_train_loader, image_folder, train_transform
    from deit_core.engine import train_one_epoch
    from deit_core.losses import DistillationLoss
    from deit_core.models import build_student, build_teacher

    acc = Accelerator(mixed_precision=args.precision, cpu=args.device == "cpu")
    dev = acc.device
    sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)
    student, _ = build_student(args.student, args.classes, args.img_size, args.patch_size, 0.1)
    student.set_distilled_training(True)
    teacher, _ = build_teacher(args.teacher, args.classes, None)
    teacher = teacher.to(dev).eval().requires_grad_(False)
    opt = create_optimizer_v2(student, "adamw", lr=1e-4, weight_decay=0.05)
    sched = CosineLRScheduler(opt, t_initial=10_000, t_in_epochs=False)
    model, opt = acc.prepare(student.to(dev), opt)
    synthetic = SyntheticDataset(args.batch_size, args.img_size, args.classes)
    x = torch.stack([synthetic[i][0] for i in range(args.batch_size)]).to(dev)
    y = torch.tensor([synthetic[i][1] for i in range(args.batch_size)]).to(dev)
    ce = nn.CrossEntropyLoss()

    def step_fn(criterion):
        def fn(n):
            steps = n or args.steps
            train_one_epoch(model, criterion, RepeatBatches(x, y, steps), opt, sched, acc, 0, 0, log_every=10**9)
            return steps * args.batch_size
        return fn

    @torch.inference_mode()
    def teacher_fn(n):
        steps = n or args.steps
        for _ in range(steps):
            with acc.autocast():
                teacher(x)
        return steps * args.batch_size

    fns = {"a": step_fn(DistillationLoss(ce, None, "none", 0.5, 1.0)), "b": teacher_fn,
           "c": step_fn(DistillationLoss(ce, teacher, "hard", 0.5, 1.0))}
    for fn in fns.values():  # warm every path (allocator, kernels) before any timing
        fn(args.warmup)
    rounds = {k: [] for k in fns}
    for _ in range(args.rounds):  # interleaved rounds, median: robust to a busy neighbour
        for k, fn in fns.items():
            rounds[k].append(timed(fn, 1, sync))
    a, b, c = (statistics.median(rounds[k]) for k in "abc")
    ideal = 1.0 / (1.0 / a + 1.0 / b)

    data = Path(args.data) if args.data else Path("var/bench/loader")
    if not args.data and not data.exists():
        from deit_core.data import write_digits_imagefolder

        write_digits_imagefolder(data, img_size=args.img_size)
    t = TrainConfig(batch_size=args.batch_size, workers=args.workers)
    ds = image_folder(str(data / "train"), "data")
    ds.transform = train_transform(args.img_size, t)
    loader = build_train_loader(ds, t, 0, 1, dev.type == "cuda")
    n = 0
    for epoch in range(2):  # the first epoch starts the persistent workers; time the second
        loader.sampler.set_epoch(epoch)
        t0 = time.perf_counter()
        n = sum(imgs.shape[0] for imgs, _ in loader)
        dt = time.perf_counter() - t0
    loader_ips = n / dt

    name = (f"{args.student} (patch {args.patch_size}) <- {args.teacher}, {args.img_size} px, "
            f"batch {args.batch_size}, {args.precision}, {dev}")
    if dev.type == "cpu":
        name += f", {torch.get_num_threads()} threads"
    print(name)
    print("| measure | images/s |")
    print("| --- | --- |")
    print(f"| (a) student train step | {a:.1f} |")
    print(f"| (b) teacher forward | {b:.1f} |")
    print(f"| (c) distillation step | {c:.1f} |")
    print(f"| ideal 1/(1/a+1/b) | {ideal:.1f} |")
    print(f"| (c) / ideal | {c / ideal:.3f} |")
    print(f"| teacher share of the step (c/b) | {c / b:.3f} |")
    print(f"| data loader ({args.workers} workers, DeiT train transform) | {loader_ips:.1f} |")
    if args.peak_tflops:
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as fc:
            step_fn(DistillationLoss(ce, teacher, "hard", 0.5, 1.0))(1)
        flops_per_img = fc.get_total_flops() / args.batch_size
        print(f"| model FLOP utilization | {100 * flops_per_img * c / (args.peak_tflops * 1e12):.1f}% "
              f"({flops_per_img / 1e9:.2f} GFLOP/img) |")


if __name__ == "__main__":
    main()
