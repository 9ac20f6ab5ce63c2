"""Training checkpoints: the full state needed to continue a run exactly, written atomically.

``last.pt`` is replaced every epoch (temp file + ``os.replace``, as timm's CheckpointSaver), and
``best.pt`` whenever val top-1 improves. Everything inside is plain tensors, numbers, lists and
dicts, so it loads with ``torch.load(weights_only=True)``: no pickled code or argparse objects.
"""
from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

LAST = "last.pt"
BEST = "best.pt"


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    v, internal, gauss = state["python"]
    random.setstate((v, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def save_checkpoint(ckpt_dir: Path, state: dict[str, Any], is_best: bool) -> Path:
    """Write ``last.pt`` and, if ``is_best``, copy it to ``best.pt`` (both atomically)."""
    last = ckpt_dir / LAST
    atomic_save(state, last)
    if is_best:
        tmp = ckpt_dir / f".{BEST}.tmp-{os.getpid()}"
        shutil.copyfile(last, tmp)
        os.replace(tmp, ckpt_dir / BEST)
    return last


def load_checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)
