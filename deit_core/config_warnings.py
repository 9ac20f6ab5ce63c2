"""Choices known to break small or non-flippable data, in words: the one set of rules.

A config can be valid and still wrong for its data: the DeiT defaults (224 px, mixup, CutMix,
RandAugment, 300 epochs, flips) on 1,437 digit images train a model that stays near chance. The
validator cannot refuse them (they are right for ImageNet), so they are warned about instead: in the
API's 201 answer (``warnings``), printed by ``distillery submit``, and shown live by the web form,
all from :func:`config_warnings`.

The rules read a *raw* config (what a user or form sends; a key left out counts as its schema
default) plus what is known of the training data (:class:`DataFacts`: the image count, a name), so
a half-filled form can be checked too. Pure: no file or database access here.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Mapping

from .config import SECTIONS
from .presets import SMALL_DATA, SMALL_DATA_MAX_IMAGES

# Data whose mirror image is another thing (a mirrored 2 is not a 2), recognised by the dataset's name.
NON_FLIPPABLE_NAME = re.compile(r"digit|mnist|text|char|letter|sign|ocr", re.IGNORECASE)
LARGE_IMG_SIZE = 160  # upscaling small images this far trains slowly and overfits
MANY_EPOCHS = 200


@dataclass(frozen=True)
class DataFacts:
    """What is known of a config's training data: its image count and a name (a registered dataset's,
    else the folder's); None when not known (then the rules that need it stay silent)."""

    num_train: int | None = None
    name: str | None = None


def _default(section: str, key: str) -> Any:
    cls = SECTIONS.get(section)
    for f in dataclasses.fields(cls) if cls else ():
        if f.name == key:
            return None if f.default is dataclasses.MISSING else f.default
    return None


def value(cfg: Mapping[str, Any], dotted: str) -> Any:
    """``cfg``'s value at ``section.key``, else the schema default."""
    section, key = dotted.split(".", 1)
    node = cfg.get(section)
    if isinstance(node, Mapping) and key in node:
        return node[key]
    return _default(section, key)


def _num(cfg: Mapping[str, Any], dotted: str) -> float | None:
    v = value(cfg, dotted)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return v


def _aa_on(aa: Any) -> bool:
    return isinstance(aa, str) and aa.strip() not in ("", "0")


def config_warnings(cfg: Mapping[str, Any], facts: DataFacts) -> list[dict[str, str]]:
    """``[{"field": "train.mixup", "message": ...}]``: what in ``cfg`` looks wrong for its data, in
    the order of the form's fields; empty when nothing does (or nothing is known of the data)."""
    n = facts.num_train if isinstance(facts.num_train, int) and not isinstance(facts.num_train, bool) else None
    small = n is not None and n < SMALL_DATA_MAX_IMAGES
    fix = f"the {SMALL_DATA.name} preset"
    out: list[dict[str, str]] = []

    def warn(field: str, message: str) -> None:
        out.append({"field": field, "message": message})

    img, epochs = _num(cfg, "data.img_size"), _num(cfg, "train.epochs")
    if small and img is not None and img >= LARGE_IMG_SIZE:
        warn("data.img_size", f"{img:g} px on {n} training images: small images upscaled this far train slowly "
             f"and overfit; {fix} uses {SMALL_DATA.values['data.img_size']} px.")
    mixup, cutmix = _num(cfg, "train.mixup") or 0, _num(cfg, "train.cutmix") or 0
    if small and (mixup > 0 or cutmix > 0):
        warn("train.mixup" if mixup > 0 else "train.cutmix", f"Mixup/CutMix on {n} training images: with few images they "
             f"blur every label and the model often stays at chance; set train.mixup and train.cutmix to 0 ({fix}).")
    if small and _aa_on(value(cfg, "train.aa")):
        warn("train.aa", f"RandAugment on {n} training images: strong augmentation needs many epochs to pay off; "
             "turn it off (train.aa: null).")
    hflip = _num(cfg, "train.hflip") or 0
    if facts.name and NON_FLIPPABLE_NAME.search(facts.name) and hflip > 0:
        warn("train.hflip", f"Horizontal flips on {facts.name}: a mirrored 2 is not a 2; set train.hflip to 0.")
    if small and epochs is not None and epochs >= MANY_EPOCHS:
        warn("train.epochs", f"{epochs:g} epochs on {n} images: the DeiT budget is for 1.28M images; "
             "20-50 epochs is plenty here.")
    batch = (_num(cfg, "train.batch_size") or 0) * (_num(cfg, "resources.processes") or 1) * (
        _num(cfg, "train.accum_steps") or 1)
    if n is not None and n > 0 and batch > n / 4:
        warn("train.batch_size", f"A global batch of {batch:g} leaves only {max(1, int(n // batch))} step(s) per epoch "
             f"on {n} images.")
    return out
