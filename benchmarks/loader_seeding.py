"""What per-image seeding costs the training loader: images/s of ``build_train_loader`` (the DeiT train
transform with RandAugment and random erasing, workers 0, on the digits ImageFolder) with the
engine's per-batch seeding, against the per-image save/seed-all/restore it replaced (issue 22) and
against no seeding at all (what the reference's loader does), alternating the three in one run.

    python benchmarks/loader_seeding.py --img-size 32 --batch-size 64 --rounds 3
"""
from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from deit_core.config import TrainConfig
from deit_core.cpu_info import cpu_identity, describe
from deit_core.data import (
    EpochSeededDataset,
    build_train_loader,
    image_folder,
    item_seed,
    train_transform,
    write_digits_imagefolder,
)


class PerImageGlobalSeeding(EpochSeededDataset):
    """The loader before issue 22: every image saved, seeded (``torch.manual_seed``: CPU and CUDA) and
    restored all three global RNGs."""

    def __getitems__(self, keys):
        return [self._one(k) for k in keys]

    def _one(self, key):
        epoch, i, copy = key
        s = item_seed(self.seed, epoch, i, copy)
        states = random.getstate(), torch.get_rng_state(), np.random.get_state()
        random.seed(s)
        torch.manual_seed(s)
        np.random.seed(s % 2**32)
        try:
            return self.base[i]
        finally:
            random.setstate(states[0])
            torch.set_rng_state(states[1])
            np.random.set_state(states[2])


class Unseeded(EpochSeededDataset):
    """No per-image seeding (not reproducible across resumes or worker counts): the floor."""

    def __getitems__(self, keys):
        return [self.base[i] for _, i, _ in keys]


def images_per_s(loader, batches: int) -> float:
    loader.sampler.set_epoch(1)
    n, t0 = 0, time.perf_counter()
    for k, (images, _) in enumerate(loader):
        n += images.shape[0]
        if k + 1 == batches:
            break
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--img-size", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(2)
    t = TrainConfig(batch_size=args.batch_size, workers=0)
    with tempfile.TemporaryDirectory() as tmp:
        write_digits_imagefolder(Path(tmp))
        ds = image_folder(str(Path(tmp) / "train"), "data.train")
        ds.transform = train_transform(args.img_size, t)
        variants = {"per batch (now)": EpochSeededDataset, "per image, global (before)": PerImageGlobalSeeding,
                    "none (reference)": Unseeded}
        rates: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, cls in variants.items():
                loader = build_train_loader(ds, t, rank=0, world=1, pin_memory=False)
                loader.dataset.__class__ = cls  # same base dataset, sampler and transform; only the seeding differs
                rates[name].append(images_per_s(loader, args.batches))
    cpu = describe(cpu_identity(threads=2))
    print(f"loader images/s, {args.img_size} px, batch {args.batch_size}, workers 0, 2 threads, median of {args.rounds} "
          f"alternating rounds; CPU: {cpu}")
    print(f"{'seeding':<28} {'img/s':>8} {'vs none':>8}")
    floor = statistics.median(rates["none (reference)"])
    for name, r in rates.items():
        med = statistics.median(r)
        print(f"{name:<28} {med:>8.0f} {med / floor:>7.2f}x")


if __name__ == "__main__":
    main()
