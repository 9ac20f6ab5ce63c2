"""The cache key: everything that decides the teacher's input and output, by field name, and its
digest. Importing it costs no torch, so the service (server/cache_pipeline.py) checks with the same
field list that the students of one pipeline share one cache; only :func:`key_fields`, which the
run calls, loads the engine's modules it measures.

Not in the key, so a sweep over them shares one cache: the student, alpha, tau, lr, weight decay,
drop path, EMA, epochs (a cache of E epochs serves any student of <= E epochs).
"""
from __future__ import annotations

import hashlib
import inspect
import json
from pathlib import Path
from typing import Any, Iterable, Mapping

from .fingerprint import dataset_fingerprint

CACHE_FORMAT = 1

# The config fields that decide the teacher's input and output (the run adds what only it knows:
# the teacher's weights sha256, the datasets' fingerprints, world size, device, library versions,
# the transform code's version).
CONFIG_KEY_FIELDS = (
    "teacher.model", "teacher.checkpoint", "data.train", "data.val", "data.img_size", "data.crop_pct",
    "train.aa", "train.crop", "train.scale_min", "train.hflip", "train.reprob", "train.mixup", "train.cutmix", "train.smoothing",
    "train.repeated_aug", "train.seed", "train.batch_size", "train.accum_steps", "train.mixed_precision",
    "resources.processes", "resources.nodes",
)

# The code the cached batches are made by, by module and name: the train transform (RandAugment with
# its posterize fix, crop, flip, erasing), the per-item seeding and the sampler's order, the eval
# transform behind the cached val predictions, and the per-epoch seeding and mixup of both the
# students and the teacher_outputs job. A change to any of them changes the key, so a cache written
# by older augmentation code misses instead of feeding a student the wrong batches' outputs.
TRANSFORM_CODE = {
    "deit_core.data": ("IMAGENET_MEAN", "IMAGENET_STD", "INTERPOLATION", "_posterize_at_least_one_bit",
                       "_use_safe_posterize", "train_transform", "eval_transform", "item_seed", "EpochSeededDataset",
                       "EpochSampler", "build_train_loader", "_Shard", "build_val_loader", "load_datasets"),
    "deit_core.preprocess": ("resize_size", "resize_and_crop"),
    "deit_core.batches": ("seed_epoch", "build_mixup"),
}
TRANSFORM_FIELD = "runtime.transform_code"


def config_key_values(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The key fields' values in a config dict (``JobConfig.to_dict()`` or a stored job config)."""
    out = {}
    for dotted in CONFIG_KEY_FIELDS:
        section, name = dotted.split(".")
        out[dotted] = (cfg.get(section) or {}).get(name)
    return out


def differing(ours: Mapping[str, Any], theirs: Mapping[str, Any]) -> list[str]:
    """The names of the fields whose values differ (a miss names them)."""
    return sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))


def source_version(objects: Iterable[tuple[str, Any]]) -> str:
    """sha256 over ``(name, source)`` of each object: a function's or class's source text
    (``inspect.getsource``), a constant's ``repr``. Any edit to one of them changes it."""
    h = hashlib.sha256()
    for name, obj in objects:
        text = inspect.getsource(obj) if inspect.isfunction(obj) or inspect.isclass(obj) else repr(obj)
        h.update(f"{name}\0{text}\0".encode())
    return h.hexdigest()


def transform_code_version() -> str:
    """The version of the code in :data:`TRANSFORM_CODE`. Its modules are imported here, when a run
    builds its key, not at import: they load torch, which the service never needs for the key."""
    import importlib

    objects = []
    for module_name, names in TRANSFORM_CODE.items():
        module = importlib.import_module(module_name)
        objects += [(f"{module_name}.{n}", getattr(module, n)) for n in names]
    return source_version(objects)


def teacher_weights_id(checkpoint: str | None) -> str:
    """sha256 of the teacher's weights file ("timm": the hub weights, pinned by the timm version)."""
    if checkpoint in (None, "timm"):
        return str(checkpoint)
    from ..files import sha256_file
    from ..models import resolve_weights_path

    path, _ = resolve_weights_path(checkpoint)
    return sha256_file(path)


def library_versions() -> dict[str, str]:
    """The torch/timm/torchvision/Pillow versions: their kernels and transforms decide the numbers."""
    import PIL
    import timm
    import torch
    import torchvision

    return {"runtime.torch": torch.__version__, "runtime.timm": timm.__version__,
            "runtime.torchvision": torchvision.__version__, "runtime.pillow": PIL.__version__}


def key_fields(cfg, world: int, device_type: str, precision: str, transform_version: str | None = None,
               memo: Path | None = None) -> dict[str, Any]:
    """Everything that decides the teacher's input and output, by config field name (so a miss
    can say which field differs): the config's key fields (:data:`CONFIG_KEY_FIELDS`) with the
    teacher's weights, the data folders, the processes and the precision replaced by what this
    run actually has (sha256, fingerprints, world size, the resolved precision), plus the device,
    the library versions and the transform code's version (``transform_version``; None: this
    code's, :func:`transform_code_version`). The fingerprints are of the folders' bytes
    (fingerprint.py), read only where the memo file ``memo`` cannot vouch for a file."""
    fields: dict[str, Any] = {"format": CACHE_FORMAT, **config_key_values(cfg.to_dict())}
    fields.update({
        "teacher.checkpoint": teacher_weights_id(cfg.teacher.checkpoint),
        "data.train": dataset_fingerprint(cfg.data.train, memo), "data.val": dataset_fingerprint(cfg.data.val, memo),
        "resources.processes": world, "resources.nodes": None, "train.mixed_precision": precision,
        "runtime.device": device_type,
        TRANSFORM_FIELD: transform_version if transform_version is not None else transform_code_version(),
    })
    fields.update(library_versions())
    return fields


def key_digest(fields: Mapping[str, Any]) -> str:
    """The key itself: sha256 of the fields as canonical JSON."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def cache_name(key: str, form_label: str, epochs: int) -> str:
    """The folder and artifact name: the key's prefix, the stored form (``Codec.label``) and the epochs covered."""
    return f"{key[:20]}-{form_label}-{epochs}ep"
