"""Training checkpoints: the full state needed to continue a run exactly, written atomically.

``last.pt`` is replaced every epoch (temp file + ``os.replace``, as timm's CheckpointSaver), and
``best.pt`` whenever val top-1 improves. Everything inside is plain tensors, numbers, lists and
dicts, so it loads with ``torch.load(weights_only=True)``: no pickled code or argparse objects.

Storage faults: the state is serialised in memory first and written with plain file writes, so a
full disk or a permission error is an ``OSError`` with its errno (torch.save's own writer says
only "unexpected pos ..."), raised as :class:`deit_core.files.StorageError` ("no space left on
device writing checkpoints/last.pt") after the temp file is removed; the previous ``last.pt`` is
untouched. Each checkpoint has a ``<name>.sha256`` sidecar, and the ``last.pt`` it replaced is kept
as ``last.prev.pt``: :func:`latest_valid` (used by ``--resume``) takes ``last.pt`` if its checksum
matches, else falls back to ``last.prev.pt``. The old ``last.prev.pt`` is deleted *before* the new
temp file is written, so the peak disk use stays two checkpoints, as before. ``best.pt`` is a hard
link to the ``last.pt`` it was (no extra space) where the filesystem allows.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .files import StorageError, sha256_file, storage_error, write_temp_beside
from .layout import BEST_CHECKPOINT, LAST_CHECKPOINT, PREV_CHECKPOINT

log = logging.getLogger(__name__)

LAST, PREV, BEST = LAST_CHECKPOINT, PREV_CHECKPOINT, BEST_CHECKPOINT


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


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _serialise(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def atomic_save(obj: Any, path: Path) -> None:
    """Write ``obj`` to ``path`` and its sha256 sidecar, each via a temp file + ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = _serialise(obj)
    what = f"{path.parent.name}/{path.name}"
    tmp = write_temp_beside(path, data, what)
    try:
        side = write_temp_beside(_sidecar(path), hashlib.sha256(data).hexdigest().encode(), what + ".sha256")
    except StorageError:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    os.replace(side, _sidecar(path))


def save_checkpoint(ckpt_dir: Path, state: dict[str, Any], is_best: bool) -> Path:
    """Write ``last.pt`` (keeping the one it replaces as ``last.prev.pt``) and, if ``is_best``,
    link or copy it to ``best.pt``; every step atomic, every file with its sha256 sidecar."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    last, prev = ckpt_dir / LAST, ckpt_dir / PREV
    data = _serialise(state)
    digest = hashlib.sha256(data).hexdigest().encode()
    try:
        if last.exists():  # free the space of the older fallback before writing the new file
            prev.unlink(missing_ok=True)
            _sidecar(prev).unlink(missing_ok=True)
    except OSError as e:
        raise storage_error(e, f"{ckpt_dir.name}/{LAST}") from e
    tmp = write_temp_beside(last, data, f"{ckpt_dir.name}/{LAST}")
    try:
        side = write_temp_beside(_sidecar(last), digest, f"{ckpt_dir.name}/{LAST}.sha256")
    except StorageError:
        tmp.unlink(missing_ok=True)
        raise
    if last.exists():
        os.replace(last, prev)
        if _sidecar(last).exists():
            os.replace(_sidecar(last), _sidecar(prev))
    os.replace(tmp, last)
    os.replace(side, _sidecar(last))
    if is_best:
        _publish_best(ckpt_dir, last, digest)
    return last


def _publish_best(ckpt_dir: Path, last: Path, digest: bytes) -> None:
    best = ckpt_dir / BEST
    tmp = ckpt_dir / f".{BEST}.tmp-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(last, tmp)  # last.pt is only ever replaced, never written in place: sharing is safe
        except OSError:
            shutil.copyfile(last, tmp)
        side = write_temp_beside(_sidecar(best), digest, f"{ckpt_dir.name}/{BEST}.sha256")
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise e if isinstance(e, StorageError) else storage_error(e, f"{ckpt_dir.name}/{BEST}") from e
    os.replace(tmp, best)
    os.replace(side, _sidecar(best))


def verify(path: Path) -> bool:
    """Whether ``path`` matches its sha256 sidecar. Without a sidecar (a checkpoint from before
    sidecars, or a crash between the two renames) it counts as valid if it loads."""
    side = _sidecar(path)
    if side.exists():
        try:
            return side.read_text().strip() == sha256_file(path)
        except OSError:
            return False
    try:
        load_checkpoint(path)
        return True
    except Exception:  # noqa: BLE001 - any unreadable file is simply not a valid checkpoint
        return False


def latest_valid(ckpt_dir: Path) -> Path | None:
    """``last.pt`` if it is intact, else ``last.prev.pt`` if that is, else None."""
    for name in (LAST, PREV):
        path = ckpt_dir / name
        if path.is_file():
            if verify(path):
                return path
            log.warning("%s is corrupt (checksum mismatch or unreadable); trying the previous checkpoint", path)
    return None


def load_checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


# --- what a resumed run may change -----------------------------------------------------------
# The fields that shape the per-update lr schedule (deit_core.train.build_optimization).
SCHEDULE_FIELDS = ("epochs", "lr", "min_lr", "warmup_epochs", "warmup_lr")


def saved_train_config(state: dict[str, Any]) -> dict[str, Any]:
    """The ``train`` section of the config a checkpoint was written with ({} for a very old one)."""
    return (state.get("config") or {}).get("train") or {}


def batch_size_refusal(state: dict[str, Any], batch_size: int) -> str | None:
    """Why ``--resume`` refuses this checkpoint for a run with per-process ``batch_size``, or None.

    Refused, even with ``--allow-reshard``: the batch size is part of the recipe, not of the
    layout. It changes the global batch, hence the scaled lr, the steps per epoch (so the saved
    update count no longer marks an epoch boundary) and which images share a batch; a resumed run
    would silently be another run. Moving to other processes keeps it and changes
    ``train.accum_steps`` or the process count under ``--allow-reshard`` instead.
    """
    old = saved_train_config(state).get("batch_size")
    if old is None or int(old) == batch_size:
        return None
    return (f"the checkpoint was written with train.batch_size {old}, this config has {batch_size}: the global batch, "
            f"the lr and the steps per epoch would change under the resumed run. Resume with train.batch_size {old}, "
            "or start a new run")


def schedule_changes(state: dict[str, Any], train: Any) -> list[str]:
    """The schedule fields (:data:`SCHEDULE_FIELDS`) whose value in ``train`` (a TrainConfig)
    differs from the checkpoint's config, as ``"train.epochs 10 -> 20"``."""
    saved = saved_train_config(state)
    return [f"train.{name} {saved[name]} -> {getattr(train, name)}" for name in SCHEDULE_FIELDS
            if name in saved and saved[name] != getattr(train, name)]


def epochs_refusal(state: dict[str, Any], epochs: int) -> str | None:
    """Why a run of ``epochs`` epochs cannot continue this checkpoint (it has done more), or None."""
    done = int(state.get("epoch", 0))
    if epochs >= done:
        return None
    return (f"the checkpoint has done {done} epochs, more than this config's {epochs}: "
            f"set train.epochs to at least {done} to continue it")
