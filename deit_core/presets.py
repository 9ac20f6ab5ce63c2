"""Named starting points by training-set size (``preset: small-data``), defined once.

The DeiT defaults in :mod:`deit_core.config` are the ImageNet recipe (300 epochs, mixup, CutMix,
RandAugment, flips, 5 warm-up epochs at 224 px). On a few thousand small images that recipe blurs
every label and the model stays near chance, so the API and CLI (``preset``) and the web form's
preset buttons all read their alternatives from here, instead of each keeping its own copy.

A preset is a flat map of dotted config keys (``train.mixup``) to values. :func:`apply_preset`
puts them *under* a config: a key the user wrote always wins, and sections a kind does not take
(``student`` and ``distillation`` for a teacher job) are left out. No torch here.

The small-data preset's distillation settings come from ``benchmarks/gain_study.py`` (digits
re-split into 400 training and 1,397 held-out images at 16 px, DeiT-Ti/8 students of a regnety_016
teacher, 40 epochs, paired statistics): soft distillation with alpha 0.9, tau 4 and the reference
code's KL reduction (``deit``) gained +1.3 pt over the same student alone, 95% interval +0.3 to +2.3
over 5 seeds (5 of 5 won; +1.9, +1.4 to +2.3, over the first 3); with ``batchmean`` +0.8 (-0.1 to
+1.6); the paper's hard alpha 0.5 +0.9 (-1.1 to +3.0) over 3 seeds, its interval including 0.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from .config import DataConfig, StudentConfig, TrainConfig

SMALL_DATA_MAX_IMAGES = 10_000  # below this a training set is "small": the warnings' threshold too
MEDIUM_DATA_MAX_IMAGES = 200_000

# Sections each job kind takes (deit_core.config._check_top_level refuses the others).
KIND_SECTIONS = {"teacher": ("data", "teacher", "train", "resources"),
                 "teacher_outputs": ("data", "teacher", "train", "resources", "distillation"),
                 "distill": ("data", "teacher", "student", "train", "resources", "distillation")}

# What small data needs whatever its size class: no mixup/CutMix/RandAugment/erasing/stochastic depth,
# no repeated augmentation (it would show each process a third of a small set per epoch).
_SMALL_TRAIN = {"train.aa": "", "train.mixup": 0, "train.cutmix": 0, "train.reprob": 0, "train.smoothing": 0.1,
                "train.drop_path": 0, "train.repeated_aug": False, "train.warmup_epochs": 2}


@dataclass(frozen=True)
class Preset:
    """One preset: its name, the label a form shows, the largest training set it is meant for
    (None: any), and its values as dotted config keys."""

    name: str
    label: str
    max_train_images: int | None
    values: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "label": self.label, "max_train_images": self.max_train_images,
                "values": dict(self.values)}


def _imagenet_values() -> dict[str, Any]:
    """The DeiT recipe spelt out (the schema's own defaults), so choosing it in a form resets every field."""
    out: dict[str, Any] = {}
    for section, cls in (("data", DataConfig), ("student", StudentConfig), ("train", TrainConfig)):
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                out[f"{section}.{f.name}"] = f.default
    return out


SMALL_DATA = Preset(
    "small-data", "Small data (under 10k images, e.g. digits)", SMALL_DATA_MAX_IMAGES,
    {"data.img_size": 32, "data.crop_pct": 1.0, "student.patch_size": 8, "train.epochs": 30, "train.batch_size": 32,
     "train.lr": 2e-3, "train.scale_min": 0.5, "train.hflip": 0, **_SMALL_TRAIN,
     # from benchmarks/gain_study.py (see the module docstring)
     "distillation.type": "soft", "distillation.alpha": 0.9, "distillation.tau": 4.0, "distillation.kl_reduction": "deit"})
MEDIUM_DATA = Preset(
    "medium-data", "Medium (10k-200k images, e.g. CIFAR)", MEDIUM_DATA_MAX_IMAGES,
    {"data.img_size": 64, "data.crop_pct": 1.0, "student.patch_size": 8, "train.epochs": 100, "train.batch_size": 64,
     "train.lr": 1e-3, "train.aa": "rand-m9-mstd0.5-inc1", "train.mixup": 0.2, "train.cutmix": 0, "train.reprob": 0.1,
     "train.smoothing": 0.1, "train.drop_path": 0.05, "train.hflip": 0.5, "train.scale_min": 0.35,
     "train.repeated_aug": False, "train.warmup_epochs": 5})
IMAGENET = Preset("imagenet", "ImageNet-scale (the DeiT recipe)", None, _imagenet_values())

PRESETS: dict[str, Preset] = {p.name: p for p in (SMALL_DATA, MEDIUM_DATA, IMAGENET)}
PRESET_NAMES = tuple(PRESETS)


class UnknownPreset(ValueError):
    """``preset`` names no preset; the message lists the choices."""

    def __init__(self, name: Any):
        super().__init__(f"unknown preset {name!r}; one of {', '.join(PRESET_NAMES)}")
        self.name = name


def get_preset(name: Any) -> Preset:
    if not isinstance(name, str) or name not in PRESETS:
        raise UnknownPreset(name)
    return PRESETS[name]


def preset_for_size(num_train: int | None) -> Preset | None:
    """The preset meant for a training set of ``num_train`` images (None when unknown)."""
    if not isinstance(num_train, int) or isinstance(num_train, bool):
        return None
    return next(p for p in PRESETS.values() if p.max_train_images is None or num_train < p.max_train_images)


def apply_preset(name: str, raw: Mapping[str, Any], kind: str | None = None) -> dict[str, Any]:
    """A deep copy of the raw config ``raw`` with preset ``name``'s values filled in where ``raw`` has
    no value of its own (the user's keys win), for the sections ``kind`` (default: ``raw['kind']``)
    takes. A section that is not a mapping is left as it is, for the validator to name."""
    preset = get_preset(name)
    out = copy.deepcopy(dict(raw))
    sections = KIND_SECTIONS.get(kind or out.get("kind"), KIND_SECTIONS["distill"])
    for dotted, value in preset.values.items():
        section, key = dotted.split(".", 1)
        if section not in sections:
            continue
        node = out.setdefault(section, {})
        if node is None:
            node = out[section] = {}
        if isinstance(node, dict):
            node.setdefault(key, copy.deepcopy(value))
    return out
