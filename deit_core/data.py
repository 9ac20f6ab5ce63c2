"""Datasets, transforms and loaders for the DeiT recipe.

Augmentation randomness is made a function of ``(seed, epoch, sample index, copy)``: the sampler
yields ``(epoch, index, copy)`` keys and the dataset seeds every RNG the augmentations draw from
(``random``, ``torch`` and numpy's global RNG, which timm's RandAugment uses to pick its ops) from
them. A resumed run (or a run with a different number of loader workers, persistent or not)
therefore sees exactly the same augmented images as an uninterrupted one, which is what makes
``--resume`` bit-for-bit testable. ``copy`` tells apart the repeats of one image under repeated
augmentation, so each repeat gets its own augmentation, as in DeiT's RASampler.
"""
from __future__ import annotations

import hashlib
import math
import os
import random
import struct
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .config import ConfigError, DataConfig, TrainConfig
from .files import replace_dir, temp_dir_beside
from .preprocess import resize_and_crop

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATION = "bicubic"


def write_digits_imagefolder(out_dir: str | os.PathLike, img_size: int = 32, val_fraction: float = 0.2,
                             seed: int = 0) -> dict[str, int]:
    """Write scikit-learn's digits (1,797 8x8 images, 10 classes) as ``train/`` and ``val/`` PNGs.

    The split is stratified and fixed by ``seed``. The folder appears atomically (temp dir + rename),
    so a half-written dataset is never mistaken for a whole one.
    """
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty")
    digits = load_digits()
    idx = np.arange(len(digits.target))
    train_idx, val_idx = train_test_split(idx, test_size=val_fraction, random_state=seed, stratify=digits.target)
    tmp = temp_dir_beside(out)
    counts = {}
    for split, ids in (("train", train_idx), ("val", val_idx)):
        for i in ids:
            label = int(digits.target[i])
            d = tmp / split / str(label)
            d.mkdir(parents=True, exist_ok=True)
            pixels = (digits.images[i] * (255.0 / 16.0)).clip(0, 255).astype("uint8")
            Image.fromarray(pixels, mode="L").resize((img_size, img_size), Image.BILINEAR).save(d / f"{i:04d}.png")
        counts[split] = len(ids)
    replace_dir(tmp, out)
    return counts


def write_digits_resplit(out_dir: str | os.PathLike, train_per_class: int = 40, img_size: int = 32, seed: int = 0,
                         heldout_per_class: int | None = None, heldout_name: str = "heldout",
                         probe_name: str | None = None) -> dict[str, int]:
    """Digits re-split for measuring a gain: a *small* training set and a *large* held-out set.

    ``train_per_class`` images of each digit go to ``train/``, ``heldout_per_class`` others (None: all
    the rest, 1,397 at 40 per class) to ``<heldout_name>/``, so a difference between two models is
    measured on many images while training stays short and small enough for a teacher to matter.
    ``probe_name``, when given, also gets the first training image of each digit (a tiny per-epoch val
    for runs that evaluate the held-out set themselves, as ``benchmarks/gain_study.py`` does). The
    demo (``server/demo.py``) names the held-out folder ``val`` so the service registers it as the
    dataset's validation set. Same pixels as :func:`write_digits_imagefolder`; each class's images
    are drawn by one ``numpy.random.default_rng(seed)`` permutation, so a split is reproducible.
    Written atomically.
    """
    from PIL import Image
    from sklearn.datasets import load_digits

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty")
    digits = load_digits()
    smallest = int(np.bincount(digits.target).min())
    if not 0 < train_per_class < smallest:
        raise ValueError(f"train_per_class must be 1 to {smallest - 1} (the rarest digit has {smallest} images), "
                         f"got {train_per_class}")
    rng = np.random.default_rng(seed)
    tmp = temp_dir_beside(out)
    counts = {"train": 0, heldout_name: 0, **({probe_name: 0} if probe_name else {})}
    for label in range(10):
        ids = rng.permutation(np.flatnonzero(digits.target == label))
        rest = ids[train_per_class:] if heldout_per_class is None else ids[train_per_class:train_per_class + heldout_per_class]
        parts = {"train": ids[:train_per_class], heldout_name: rest, **({probe_name: ids[:1]} if probe_name else {})}
        for split, chosen in parts.items():
            d = tmp / split / str(label)
            d.mkdir(parents=True, exist_ok=True)
            for i in chosen:
                pixels = (digits.images[i] * (255.0 / 16.0)).clip(0, 255).astype("uint8")
                Image.fromarray(pixels, mode="L").resize((img_size, img_size), Image.BILINEAR).save(d / f"{i:04d}.png")
            counts[split] += len(chosen)
    out.parent.mkdir(parents=True, exist_ok=True)
    replace_dir(tmp, out)
    return counts


def image_folder(root: str, field: str):
    """An ImageFolder, or a ConfigError naming ``field`` if the folder holds no class folders/images."""
    from torchvision.datasets import ImageFolder

    try:
        return ImageFolder(root)
    except (FileNotFoundError, OSError) as e:
        raise ConfigError(field, f"not a readable ImageFolder (class sub-folders of images): {e}") from e


DECODED_CACHE_BYTES = 128 << 20  # per process: a loader worker keeps its own


class DecodedImages:
    """ImageFolder's loader (open, decode, convert to RGB) that keeps the decoded pixels of a small
    dataset in memory and serves them again without touching the file.

    Why: every epoch otherwise reopens and decodes every image, which on a small dataset (digits at
    32 px: 3 KB an image) costs as much as RandAugment. Whether to keep anything is decided on the first
    image: when ``images`` of its size would not fit in ``budget`` bytes nothing is kept, since a cache
    of part of a large set costs memory in every loader worker for little gain. Each call returns a new
    image (``Image.frombytes``), so no transform can change a kept one, and the pixels are those the
    file decodes to: the batches are the same with the cache or without it.
    """

    def __init__(self, images: int, budget: int = DECODED_CACHE_BYTES):
        self.images, self.budget, self.used = images, budget, 0
        self.kept: dict[str, tuple[str, tuple[int, int], bytes]] = {}
        self.enabled: bool | None = None  # decided by the first image

    def __call__(self, path: str):
        from PIL import Image

        hit = self.kept.get(path)
        if hit is not None:
            return Image.frombytes(*hit)
        from torchvision.datasets.folder import default_loader

        img = default_loader(path)
        if self.enabled is False:
            return img
        pixels = img.tobytes()
        if self.enabled is None:
            self.enabled = self.images * len(pixels) <= self.budget
        if self.enabled and self.used + len(pixels) <= self.budget:
            self.kept[path] = (img.mode, img.size, pixels)
            self.used += len(pixels)
        return img


def keep_decoded(dataset, budget: int = DECODED_CACHE_BYTES):
    """``dataset`` (an ImageFolder) with a :class:`DecodedImages` loader sized for it."""
    dataset.loader = DecodedImages(len(dataset), budget)
    return dataset


def _posterize_at_least_one_bit(img, bits_to_keep, **_):
    """timm's RandAugment asks for 0 bits at the top magnitude (m9 + mstd noise reaches it), which
    Pillow 13 refuses with ValueError mid-epoch; one bit is the same augmentation, legal."""
    from PIL import ImageOps

    return img if bits_to_keep >= 8 else ImageOps.posterize(img, max(int(bits_to_keep), 1))


def _use_safe_posterize() -> None:
    from timm.data import auto_augment

    for name in ("Posterize", "PosterizeIncreasing", "PosterizeOriginal"):
        auto_augment.NAME_TO_OP[name] = _posterize_at_least_one_bit


def train_transform(img_size: int, t: TrainConfig, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """DeiT's train transform: random resized crop (or, with ``crop: padded``, a padded random crop), flip,
    RandAugment, colour jitter, random erasing."""
    from timm.data import create_transform

    _use_safe_posterize()

    aa = t.aa if t.aa not in (None, "", "0") else None
    transform = create_transform(
        input_size=img_size, is_training=True, scale=(t.scale_min, 1.0), hflip=t.hflip, color_jitter=0.3, auto_augment=aa,
        interpolation=INTERPOLATION, re_prob=t.reprob, re_mode="pixel", re_count=1, mean=mean, std=std,
    )
    if t.crop == "padded":  # the reference's small-image crop replaces the random resized crop, as in its datasets.py
        from torchvision import transforms as T

        transform.transforms[0] = T.Compose([*resize_and_crop(img_size, 1.0), T.RandomCrop(img_size, padding=img_size // 8)])
    return transform


def eval_transform(img_size: int, crop_pct: float, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """Resize the shorter side to ``img_size / crop_pct`` (bicubic), center-crop, to tensor, normalize:
    timm's eval transform, and what the export's parity check and labels.json describe (preprocess.py)."""
    from torchvision import transforms as T

    return T.Compose([*resize_and_crop(img_size, crop_pct), T.ToTensor(), T.Normalize(mean, std)])


def item_seed(seed: int, epoch: int, index: int, copy: int = 0) -> int:
    """A 63-bit seed that differs for every (run seed, epoch, image, repeat): a BLAKE2b hash of the key,
    so neighbouring keys do not give correlated streams. (numpy's SeedSequence did the same mixing at
    12 us an image against 0.8 us, a tenth of the seeding cost of a 32 px batch.)"""
    digest = hashlib.blake2b(struct.pack("<4q", seed, epoch, index, copy), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class EpochSeededDataset(Dataset):
    """Wraps a dataset so that item ``(epoch, i, copy)`` is augmented with RNGs seeded from that key.

    ``random``, torch's CPU generator and numpy's global RNG are seeded (timm's RandAugment picks its ops
    with ``np.random``), and all three are restored afterwards, so loading in the main process
    (``workers: 0``) does not disturb the training loop's own randomness (mixup draws from numpy).

    The DataLoader hands a whole batch of keys to :meth:`__getitems__`, so the three global states are
    saved and restored once per batch, not once per image: saving them copies about 7 KB and was, with
    ``torch.manual_seed`` (which also queues a seed for every CUDA device and, on CUDA builds, formats
    the call stack), most of the loader's time at 32 px (issue 22: 0.78x the reference's images/s).
    Only the CPU generator is seeded: augmentation never draws on a GPU, and the images are the same
    as with ``torch.manual_seed``.
    """

    def __init__(self, base: Dataset, seed: int):
        self.base = base
        self.seed = seed

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: tuple[int, int, int]):
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: list[tuple[int, int, int]]) -> list:
        py_state, torch_state, np_state = random.getstate(), torch.get_rng_state(), np.random.get_state()
        try:
            out = []
            for epoch, i, copy in keys:
                s = item_seed(self.seed, epoch, i, copy)
                random.seed(s)
                torch.default_generator.manual_seed(s)
                np.random.seed(s % 2**32)
                out.append(self.base[i])
            return out
        finally:
            random.setstate(py_state)
            torch.set_rng_state(torch_state)
            np.random.set_state(np_state)


class EpochSampler(Sampler):
    """Shuffles by (seed, epoch), shards across ranks, and optionally repeats each image.

    With ``repeats > 1`` this is DeiT's repeated-augmentation sampler (RASampler): every image appears
    ``repeats`` times per epoch, on different ranks with different augmentations, while the number of
    samples per rank stays ``ceil(n / world)``. Keys are ``(epoch, index, copy)``; ``copy`` (0 ..
    repeats-1) is part of the augmentation seed, so the repeats of an image are augmented differently.
    """

    def __init__(self, n: int, rank: int, world: int, seed: int, shuffle: bool = True, repeats: int = 1):
        self.n, self.rank, self.world, self.seed = n, rank, world, seed
        self.shuffle, self.repeats = shuffle, repeats
        self.epoch = 0
        self.per_rank = math.ceil(n / world)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.per_rank

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + 7919 * self.epoch)
            order = torch.randperm(self.n, generator=g)
        else:
            order = torch.arange(self.n)
        copies = torch.zeros_like(order)
        if self.repeats > 1:
            order = order.repeat_interleave(self.repeats)
            copies = torch.arange(len(order)) % self.repeats
        total = self.per_rank * self.world
        if len(order) < total:  # padding repeats the first keys, like DistributedSampler
            order = torch.cat([order, order[: total - len(order)]])
            copies = torch.cat([copies, copies[: total - len(copies)]])
        mine = slice(self.rank, total, self.world)
        return iter([(self.epoch, i, c)  # tolist(): one conversion, not two int() calls per image
                     for i, c in zip(order[mine][: self.per_rank].tolist(), copies[mine][: self.per_rank].tolist())])


def loader_kwargs(workers: int, pin_memory: bool) -> dict[str, Any]:
    kw: dict[str, Any] = {"num_workers": workers, "pin_memory": pin_memory}
    if workers > 0:
        kw.update(persistent_workers=True, prefetch_factor=4)
    return kw


def build_train_loader(dataset: Dataset, t: TrainConfig, rank: int, world: int, pin_memory: bool) -> DataLoader:
    repeats = 3 if (t.repeated_aug and world > 1) else 1
    sampler = EpochSampler(len(dataset), rank, world, t.seed, shuffle=True, repeats=repeats)
    if len(sampler) < t.batch_size:
        raise ConfigError("train.batch_size",
                          f"{t.batch_size} is larger than the {len(sampler)} training images each process sees")
    # The loader draws its workers' base seed when an iterator starts (every epoch, or once with
    # persistent workers): from its own generator, not the global RNG, so a resumed run's training
    # loop sees the same global random stream as an uninterrupted one (items are seeded per key anyway).
    return DataLoader(EpochSeededDataset(dataset, t.seed), batch_size=t.batch_size, sampler=sampler,
                      drop_last=True, generator=torch.Generator().manual_seed(t.seed), **loader_kwargs(t.workers, pin_memory))


class _Shard(Dataset):
    def __init__(self, base: Dataset, indices: list[int]):
        self.base, self.indices = base, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.base[self.indices[i]]


def build_val_loader(dataset: Dataset, batch_size: int, rank: int, world: int, workers: int, pin_memory: bool) -> DataLoader:
    """Each rank evaluates ``indices[rank::world]`` with no padding, so summed counts are exact."""
    shard = _Shard(dataset, list(range(rank, len(dataset), world)))
    kw = loader_kwargs(workers, pin_memory)
    kw.pop("persistent_workers", None)  # evaluated once per epoch; workers restart cheaply
    return DataLoader(shard, batch_size=batch_size, shuffle=False, drop_last=False,
                      generator=torch.Generator().manual_seed(0), **kw)


def load_datasets(data: DataConfig, t: TrainConfig) -> tuple[Dataset, Dataset, list[str]]:
    """Train and val ImageFolders with their transforms; the class lists must agree."""
    train = keep_decoded(image_folder(data.train, "data.train"))
    val = keep_decoded(image_folder(data.val, "data.val"))
    if train.classes != val.classes:
        raise ConfigError("data.val", f"class folders {val.classes} differ from data.train's {train.classes}")
    train.transform = train_transform(data.img_size, t)
    val.transform = eval_transform(data.img_size, data.crop_pct)
    return train, val, list(train.classes)


class SyntheticDataset(Dataset):
    """Random images of a fixed size, for benchmarks that must not wait on disk."""

    def __init__(self, n: int, img_size: int, num_classes: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randn(min(n, 256), 3, img_size, img_size, generator=g)
        self.labels = torch.randint(0, num_classes, (n,), generator=g)
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        if isinstance(i, tuple):  # an (epoch, index, copy) key from EpochSampler
            i = i[1]
        return self.images[i % len(self.images)], int(self.labels[i])

