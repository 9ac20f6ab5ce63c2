"""Evaluation preprocessing, in one place: training's eval, the export's parity check and labels.json.

Why one module: the accuracy a run reports, the accuracy the export's parity gate measures and the
resize an app performs must be the same computation, or the numbers describe different models. It
is timm's eval transform (``transforms_imagenet_eval``, crop mode ``center``): resize the shorter
side to ``floor(img_size / crop_pct)`` (bicubic), then center-crop ``img_size``. DeiT evaluates
ImageNet with ``crop_pct`` 0.875 (256 -> 224).
"""
from __future__ import annotations

import math

DEFAULT_CROP_PCT = 0.875
# A final/ written before crop_pct was recorded was evaluated on the whole image.
LEGACY_CROP_PCT = 1.0


def resize_size(img_size: int, crop_pct: float) -> int:
    """The shorter side after the eval resize, before the center crop (timm: ``floor(size / crop_pct)``)."""
    if not 0.0 < crop_pct <= 1.0:
        raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
    return int(math.floor(img_size / crop_pct))


def resize_and_crop(img_size: int, crop_pct: float) -> list:
    """The geometric part of the eval transform, PIL in, PIL out (callers add ToTensor/Normalize)."""
    from torchvision import transforms as T

    return [T.Resize(resize_size(img_size, crop_pct), interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(img_size)]


def describe(img_size: int, crop_pct: float, interpolation: str = "bicubic") -> dict:
    """What an app must do to a photo before feeding the model, as plain data for labels.json."""
    return {"resize_shorter_side": resize_size(img_size, crop_pct), "interpolation": interpolation,
            "center_crop": img_size, "crop_pct": crop_pct}
