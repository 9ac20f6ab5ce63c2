"""What decides a teacher-output cache's contents, without torch: the config fields in its key and
which stored forms can serve which loss. The engine (deit_core/teacher_cache.py) builds the key
from these; the service uses them to check that the students of one pipeline share one cache.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Mapping

STORES = ("auto", "argmax", "fp16", "fp32", "topk")
OFF, AUTO = "off", "auto"

# The config fields that decide the teacher's input and output (the run adds what only it knows:
# the teacher's weights sha256, the datasets' fingerprints, world size, device, library versions).
# Not here, so a sweep over them shares one cache: the student, alpha, tau, lr, weight decay,
# drop path, EMA, epochs (a cache of E epochs serves any student of <= E epochs).
CONFIG_KEY_FIELDS = (
    "teacher.model", "teacher.checkpoint", "data.train", "data.val", "data.img_size", "data.crop_pct",
    "train.aa", "train.scale_min", "train.hflip", "train.reprob", "train.mixup", "train.cutmix", "train.smoothing",
    "train.repeated_aug", "train.seed", "train.batch_size", "train.accum_steps", "train.mixed_precision",
    "resources.processes", "resources.nodes",
)


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


def resolved_store(distillation: Mapping[str, Any]) -> str:
    """What a writer stores: ``auto`` is the argmax for hard distillation, fp16 logits for soft."""
    store = distillation.get("teacher_cache_store", AUTO)
    if store != AUTO:
        return store
    return "argmax" if distillation.get("type") == "hard" else "fp16"


def accepts(distillation: Mapping[str, Any], manifest: Mapping[str, Any]) -> str | None:
    """Why a cache's stored form (``manifest['store']``, ``['topk']``) cannot serve this loss (None: it can).

    Every form keeps the exact argmax, so a hard student reads any; a soft one reads fp16 or fp32
    logits under ``auto``, and top-k only when it asks for it by name.
    """
    stored, wanted = manifest.get("store"), distillation.get("teacher_cache_store", AUTO)
    if wanted != AUTO:
        if stored != wanted:
            return f"it stores {stored}, distillation.teacher_cache_store asks for {wanted}"
        k = distillation.get("teacher_cache_topk")
        if stored == "topk" and manifest.get("topk") != k:
            return f"it stores the top {manifest.get('topk')}, distillation.teacher_cache_topk is {k}"
        return None
    if distillation.get("type") == "soft" and stored not in ("fp16", "fp32"):
        return f"it stores {stored}; soft distillation reads fp16 or fp32 logits (name topk explicitly to accept it)"
    return None


def dataset_fingerprint(root: str | os.PathLike) -> str:
    """sha256 over every file's relative path, size and mtime: any added, removed, renamed or
    rewritten image changes it, without reading the images."""
    h = hashlib.sha256()
    base = Path(root)
    for dirpath, dirnames, filenames in os.walk(base, followlinks=True):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            st = p.stat()
            h.update(f"{p.relative_to(base).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()
