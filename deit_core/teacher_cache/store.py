"""A cache's files: one rank's writer and reader, and the sizes they take.

Layout of ``<store>/<name>/``: ``manifest.json`` (manifest.py) and per (epoch, rank) one file
``eEEEE-rRRR.pt`` with, in batch order, each row's sample ``(index, copy)``, its label, the
teacher's argmax and what the stored form keeps (codecs.py); plus ``val-rRRR.pt`` (the teacher's
val predictions and top-1). A cache is written in a hidden folder beside it and appears whole by
one rename, after every rank wrote every epoch. Reading checks each file's sha256 against the
manifest and every row's sample and label against the run's own batch: any mismatch is a
:class:`Miss`, never a wrong target.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from ..files import publish_modes, sha256_file
from ..losses import TeacherTargets
from .codecs import accepts, codec
from .key import differing
from .manifest import MANIFEST, CacheStatus, FileRecord, Manifest, Miss


def index_dtype(num_classes: int) -> torch.dtype:
    return torch.int16 if num_classes <= 32767 else torch.int32


def row_bytes(store: str, num_classes: int, topk: int) -> int:
    """Bytes per cached row: sample (index, copy) 8, label 2, argmax 2 (4 past 32,767 classes), the form's payload."""
    idx = 2 if num_classes <= 32767 else 4
    return 8 + 2 + idx + codec(store).payload_bytes(num_classes, topk, idx)


def estimate_bytes(store: str, num_classes: int, topk: int, epochs: int, world: int, rows_per_rank: int,
                   val_rows: int) -> int:
    """The cache's size before it is written (each file adds about 3 KiB of headers)."""
    files = epochs * world + world
    return (epochs * world * rows_per_rank * row_bytes(store, num_classes, topk)
            + val_rows * 4 + files * 3072)


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def epoch_file(epoch: int, rank: int) -> str:
    return f"e{epoch:04d}-r{rank:03d}.pt"


def val_file(rank: int) -> str:
    return f"val-r{rank:03d}.pt"


def sampler_keys(sampler, rows: int) -> torch.Tensor:
    """This rank's (index, copy) per row for the sampler's current epoch, in batch order."""
    keys = [(i, c) for _, i, c in list(sampler)][:rows]
    return torch.tensor(keys, dtype=torch.int32).reshape(-1, 2)


def _save(obj: dict[str, Any], path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------ writing
class CacheWriter:
    """Collects one rank's rows per epoch and writes them into the shared partial folder;
    :meth:`publish` (rank 0, after every rank finished) renames it into the store."""

    def __init__(self, partial: Path, final: Path, manifest: Manifest, rank: int):
        self.partial, self.final, self.manifest, self.rank = partial, final, manifest, rank
        self.codec = codec(manifest.store)
        self.idx_dtype = index_dtype(manifest.num_classes)
        self._rows: list[dict[str, torch.Tensor]] = []

    def record(self, labels: torch.Tensor, logits: torch.Tensor, argmax: torch.Tensor) -> None:
        row = {"labels": labels.detach().to("cpu", torch.int16), "argmax": argmax.detach().to("cpu", self.idx_dtype)}
        row.update(self.codec.encode(logits, self.manifest.topk, self.idx_dtype))
        self._rows.append(row)

    def end_epoch(self, epoch: int, keys: torch.Tensor) -> None:
        data = {name: torch.cat([r[name] for r in self._rows]) for name in self._rows[0]} if self._rows else {}
        self._rows = []
        if not data or len(data["labels"]) != len(keys):
            raise RuntimeError(f"teacher cache: epoch {epoch + 1} recorded {len(data.get('labels', []))} rows, "
                               f"the sampler gave {len(keys)}")
        data["keys"] = keys
        _save(data, self.partial / epoch_file(epoch, self.rank))

    def record_val(self, preds: torch.Tensor, teacher_top1: float) -> None:
        _save({"preds": preds.detach().to("cpu", torch.int32), "teacher_top1": torch.tensor(teacher_top1)},
              self.partial / val_file(self.rank))

    def publish(self) -> tuple[CacheStatus, Manifest]:
        """Rank 0: write the manifest and rename the folder into place. Returns (status, manifest);
        status ``exists`` when another run published the same cache meanwhile (ours is dropped)."""
        files = {f.name: FileRecord(bytes=f.stat().st_size, sha256=sha256_file(f)) for f in sorted(self.partial.iterdir())}
        manifest = dataclasses.replace(self.manifest, files=files, bytes=sum(r.bytes for r in files.values()))
        manifest.write(self.partial)
        publish_modes(self.partial)
        if (self.final / MANIFEST).exists():
            shutil.rmtree(self.partial, ignore_errors=True)
            return CacheStatus.EXISTS, manifest
        if self.final.exists():  # a leftover without a manifest: never a valid cache
            shutil.rmtree(self.final)
        os.replace(self.partial, self.final)
        return CacheStatus.WRITTEN, manifest

    def discard(self) -> None:
        shutil.rmtree(self.partial, ignore_errors=True)


# ------------------------------------------------------------------------------------ reading
def check_serves(manifest: Manifest, key: str, fields: dict[str, Any], distillation, epochs: int) -> None:
    """Raise :class:`Miss` naming what keeps the cache from serving this run: key fields, stored form, epochs."""
    if manifest.key != key:
        diff = differing(fields, manifest.key_fields or {})
        raise Miss("its key differs in " + (", ".join(diff) if diff else "the key version"))
    why = accepts(dataclasses.asdict(distillation), {"store": manifest.store, "topk": manifest.topk})
    if why:
        raise Miss(why)
    if manifest.epochs < epochs:
        raise Miss(f"it covers {manifest.epochs} epochs, this run needs {epochs}")


class CacheReader:
    """One rank's view of a published cache: an epoch at a time, every row checked."""

    def __init__(self, path: Path, manifest: Manifest, rank: int, device: torch.device):
        self.path, self.manifest, self.rank, self.device = path, manifest, rank, device
        self.codec = codec(manifest.store)
        self.batch = manifest.batch_size
        self.data: dict[str, torch.Tensor] | None = None

    def _load(self, name: str) -> dict[str, Any]:
        meta = self.manifest.files.get(name)
        f = self.path / name
        if meta is None or not f.is_file() or f.stat().st_size != meta.bytes or sha256_file(f) != meta.sha256:
            raise Miss(f"{name} is missing or does not match its sha256 in the manifest")
        return torch.load(f, map_location="cpu", weights_only=True, mmap=True)

    def begin_epoch(self, epoch: int, keys: torch.Tensor) -> None:
        data = self._load(epoch_file(epoch, self.rank))
        if not torch.equal(data["keys"], keys):
            raise Miss(f"epoch {epoch + 1}: the stored samples differ from this run's batches")
        self.data = data

    def targets(self, step: int, labels: torch.Tensor) -> TeacherTargets:
        rows = slice((step - 1) * self.batch, step * self.batch)
        d = self.data
        if not torch.equal(d["labels"][rows].to(labels.device, torch.long), labels):
            raise Miss(f"step {step}: the stored labels differ from this batch's")
        argmax = d["argmax"][rows].to(self.device, torch.long)
        logits = self.codec.decode(d, rows, self.manifest.num_classes, self.device)
        return TeacherTargets(logits=logits, argmax=argmax)

    def val(self) -> tuple[torch.Tensor, float]:
        data = self._load(val_file(self.rank))
        return data["preds"].to(self.device, torch.long), float(data["teacher_top1"])
