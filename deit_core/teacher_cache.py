"""The teacher-output cache: the teacher's outputs on the students' exact augmented batches,
written once and read by every later student whose batches are the same.

Why it can be exact: every augmentation is a function of ``(seed, epoch, sample, copy)`` (see
data.py) and mixup/cutmix draw from numpy's RNG, reseeded at each epoch from ``(seed, epoch,
rank)``. So the teacher's input for (epoch, rank, step) is fixed by the settings in the *key*,
and a student that matches the key can read the teacher's output instead of computing it.

- **Key** (:func:`key_fields`): the teacher (model + sha256 of its weights), both datasets'
  fingerprints (relative path, size and mtime of every file), image size and eval crop, every
  augmentation setting (RandAugment, crop scale, flip, erasing, mixup, cutmix, smoothing,
  repeated augmentation), seed, world size, per-process batch, accumulation, the device type and
  precision the teacher runs in, and the torch/timm/torchvision/Pillow versions (their kernels
  and transforms decide the numbers). Not in it: the student model, alpha, tau, lr, weight decay,
  drop path, epochs (a cache of E epochs serves any student of <= E epochs), so a sweep over
  those shares one cache.
- **Layout** of ``<store>/<name>/``: ``manifest.json`` (key, key fields, what is stored, sizes and
  sha256 of every file) and per (epoch, rank) one file ``eEEEE-rRRR.pt`` with, in batch order,
  each row's sample ``(index, copy)``, its label, the teacher's argmax and the stored logits;
  plus ``val-rRRR.pt`` (the teacher's val predictions and top-1). A cache is written in a hidden
  folder beside it and appears whole by one rename, after every rank wrote every epoch.
- **What is stored** (``distillation.teacher_cache_store``): ``argmax`` (hard distillation,
  2 bytes a row), ``fp16`` logits (soft; the default), ``fp32`` logits (exact), ``topk``: the k
  largest logits in fp16, their classes and the mean of the other logits, which stand in for
  every logit outside the top k (FKD's label compression; the soft loss then differs from the
  full logits' by what the benchmark prints). Every store also keeps the exact argmax, so a hard
  student can read any of them.
- **Reading** verifies the key, the stored form against the loss, the epochs, each file's sha256
  and every row's sample and label; any mismatch is a *miss*: logged as a ``teacher_cache``
  event with the reason, and the teacher runs live from there on. Never silently wrong.
- **Size**: estimated before anything is written; over ``max_bytes`` the cache is not written
  (event ``refused``) and the run goes on with the live teacher.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from .cache_key import AUTO, OFF, accepts, config_key_values, dataset_fingerprint, differing, resolved_store
from .config import ConfigError, JobConfig
from .files import publish_modes, sha256_file, write_json_atomic
from .losses import TeacherTargets

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
DEFAULT_MAX_BYTES = 8 << 30  # the service's DISTILLERY_TEACHER_CACHE_MAX_BYTES default
MANIFEST = "manifest.json"
EVENT = "teacher_cache"


@dataclass(frozen=True)
class CacheOptions:
    """Where the run may find and write caches (the service's store; None: only a named cache
    path is read, nothing is written) and the largest cache it may write."""

    store_dir: Path | None = None
    max_bytes: int = DEFAULT_MAX_BYTES


# ------------------------------------------------------------------------------------- the key
def teacher_weights_id(checkpoint: str | None) -> str:
    """sha256 of the teacher's weights file ("timm": the hub weights, pinned by the timm version)."""
    if checkpoint in (None, "timm"):
        return str(checkpoint)
    from .models import resolve_weights_path

    path, _ = resolve_weights_path(checkpoint)
    return sha256_file(path)


def _versions() -> dict[str, str]:
    import PIL
    import timm
    import torchvision

    return {"runtime.torch": torch.__version__, "runtime.timm": timm.__version__,
            "runtime.torchvision": torchvision.__version__, "runtime.pillow": PIL.__version__}


def key_fields(cfg: JobConfig, world: int, device_type: str, precision: str) -> dict[str, Any]:
    """Everything that decides the teacher's input and output, by config field name (so a miss
    can say which field differs): the config's key fields (cache_key.CONFIG_KEY_FIELDS) with the
    teacher's weights, the data folders, the processes and the precision replaced by what this
    run actually has (sha256, fingerprints, world size, the resolved precision), plus the device
    and the library versions."""
    fields: dict[str, Any] = {"format": CACHE_FORMAT, **config_key_values(cfg.to_dict())}
    fields.update({
        "teacher.checkpoint": teacher_weights_id(cfg.teacher.checkpoint),
        "data.train": dataset_fingerprint(cfg.data.train), "data.val": dataset_fingerprint(cfg.data.val),
        "resources.processes": world, "resources.nodes": None, "train.mixed_precision": precision,
        "runtime.device": device_type,
    })
    fields.update(_versions())
    return fields


def cache_key(fields: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def cache_name(key: str, store: str, topk: int, epochs: int) -> str:
    """The folder and artifact name: the key's prefix, the stored form and the epochs covered."""
    return f"{key[:20]}-{store}{topk if store == 'topk' else ''}-{epochs}ep"


# ------------------------------------------------------------------------------------ sizes
def _index_dtype(num_classes: int) -> torch.dtype:
    return torch.int16 if num_classes <= 32767 else torch.int32


def row_bytes(store: str, num_classes: int, topk: int) -> int:
    """Bytes per cached row: sample (index, copy) 8, label 2, argmax 2 (4 past 32,767 classes), logits."""
    idx = 2 if num_classes <= 32767 else 4
    payload = {"argmax": 0, "fp16": 2 * num_classes, "fp32": 4 * num_classes,
               "topk": min(topk, num_classes) * (2 + idx) + 2}[store]
    return 8 + 2 + idx + payload


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


# ------------------------------------------------------------------------------------ writing
class CacheWriter:
    """Collects one rank's rows per epoch and writes them into the shared partial folder;
    :meth:`publish` (rank 0, after every rank finished) renames it into the store."""

    def __init__(self, partial: Path, final: Path, manifest: dict[str, Any], rank: int):
        self.partial, self.final, self.manifest, self.rank = partial, final, manifest, rank
        self.store, self.topk = manifest["store"], manifest["topk"]
        self.idx_dtype = _index_dtype(manifest["num_classes"])
        self._rows: list[dict[str, torch.Tensor]] = []

    def record(self, labels: torch.Tensor, logits: torch.Tensor, argmax: torch.Tensor) -> None:
        row = {"labels": labels.detach().to("cpu", torch.int16), "argmax": argmax.detach().to("cpu", self.idx_dtype)}
        if self.store == "fp16":
            row["logits"] = logits.detach().to("cpu", torch.float16)
        elif self.store == "fp32":
            row["logits"] = logits.detach().to("cpu", torch.float32)
        elif self.store == "topk":
            full = logits.detach().float()
            k = min(self.topk, full.shape[1])
            top = full.topk(k, dim=1)
            rest = (full.sum(1) - top.values.sum(1)) / max(full.shape[1] - k, 1)
            row.update(topk_values=top.values.to("cpu", torch.float16), topk_indices=top.indices.to("cpu", self.idx_dtype),
                       rest_mean=rest.to("cpu", torch.float16))
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

    def publish(self) -> tuple[str, dict[str, Any]]:
        """Rank 0: write the manifest and rename the folder into place. Returns (status, manifest);
        status ``exists`` when another run published the same cache meanwhile (ours is dropped)."""
        files = {}
        for f in sorted(self.partial.iterdir()):
            files[f.name] = {"bytes": f.stat().st_size, "sha256": sha256_file(f)}
        manifest = {**self.manifest, "files": files, "bytes": sum(v["bytes"] for v in files.values())}
        write_json_atomic(self.partial / MANIFEST, manifest)
        publish_modes(self.partial)
        if (self.final / MANIFEST).exists():
            shutil.rmtree(self.partial, ignore_errors=True)
            return "exists", manifest
        if self.final.exists():  # a leftover without a manifest: never a valid cache
            shutil.rmtree(self.final)
        os.replace(self.partial, self.final)
        return "written", manifest

    def discard(self) -> None:
        shutil.rmtree(self.partial, ignore_errors=True)


def _save(obj: dict[str, Any], path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------ reading
class Miss(Exception):
    """The cache cannot serve this run (the message says why)."""


def read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        raise Miss(f"no readable {MANIFEST} in {path}: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != CACHE_FORMAT:
        raise Miss(f"{path} is not a teacher-output cache of format {CACHE_FORMAT}")
    return manifest


def check_manifest(manifest: dict[str, Any], key: str, fields: dict[str, Any], distillation, epochs: int) -> None:
    """Raise :class:`Miss` naming what differs: key fields, stored form, epochs covered."""
    if manifest.get("key") != key:
        diff = differing(fields, manifest.get("key_fields") or {})
        raise Miss("its key differs in " + (", ".join(diff) if diff else "the key version"))
    why = accepts(dataclasses.asdict(distillation), manifest)
    if why:
        raise Miss(why)
    if int(manifest.get("epochs", 0)) < epochs:
        raise Miss(f"it covers {manifest.get('epochs')} epochs, this run needs {epochs}")


class CacheReader:
    """One rank's view of a published cache: an epoch at a time, every row checked."""

    def __init__(self, path: Path, manifest: dict[str, Any], rank: int, device: torch.device):
        self.path, self.manifest, self.rank, self.device = path, manifest, rank, device
        self.batch = manifest["batch_size"]
        self.data: dict[str, torch.Tensor] | None = None

    def _load(self, name: str) -> dict[str, Any]:
        meta = self.manifest["files"].get(name)
        f = self.path / name
        if meta is None or not f.is_file() or f.stat().st_size != meta["bytes"] or sha256_file(f) != meta["sha256"]:
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
        if "logits" in d:
            logits = d["logits"][rows].to(self.device, torch.float32)
        elif "topk_values" in d:
            rest = d["rest_mean"][rows].to(self.device, torch.float32)
            logits = rest[:, None].expand(len(argmax), self.manifest["num_classes"]).clone()
            logits.scatter_(1, d["topk_indices"][rows].to(self.device, torch.long),
                            d["topk_values"][rows].to(self.device, torch.float32))
        else:
            logits = None
        return TeacherTargets(logits=logits, argmax=argmax)

    def val(self) -> tuple[torch.Tensor, float]:
        data = self._load(val_file(self.rank))
        return data["preds"].to(self.device, torch.long), float(data["teacher_top1"])


# ------------------------------------------------------------------------------------ the feed
class TeacherFeed:
    """What a run's training loop asks for each batch's teacher outputs: from the cache on a hit,
    else from the live teacher (and, when writing, into a new cache).

    Built by :func:`open_feed`; ``reader`` and ``writer`` are never both set.
    """

    def __init__(self, live: Callable[[torch.Tensor], torch.Tensor], emit: Callable[..., Any], rank: int,
                 reader: CacheReader | None = None, writer: CacheWriter | None = None, name: str | None = None):
        self.live, self.emit, self.rank = live, emit, rank
        self.reader, self.writer, self.name = reader, writer, name
        self.keys: torch.Tensor | None = None
        self.cached_batches = self.live_batches = 0

    def _miss(self, reason: str) -> None:
        log.warning("teacher cache %s: miss on rank %d (%s); the teacher runs live from here on", self.name, self.rank, reason)
        self.emit(EVENT, status="miss", name=self.name, rank=self.rank, reason=reason)
        self.reader = None

    def begin_epoch(self, epoch: int, sampler, steps: int, batch_size: int) -> None:
        self.keys = sampler_keys(sampler, steps * batch_size)
        if self.reader is not None:
            try:
                self.reader.begin_epoch(epoch, self.keys)
            except Miss as e:
                self._miss(str(e))

    def targets(self, step: int, images: torch.Tensor, labels: torch.Tensor) -> TeacherTargets:
        """The teacher outputs for batch ``step`` (1-based); ``labels`` are the batch's own
        (before mixup), checked against the cached rows."""
        if self.reader is not None:
            try:
                out = self.reader.targets(step, labels)
                self.cached_batches += 1
                return out
            except Miss as e:
                self._miss(str(e))
        logits = self.live(images)
        argmax = logits.argmax(dim=1)
        if self.writer is not None:
            self.writer.record(labels, logits, argmax)
        self.live_batches += 1
        return TeacherTargets(logits=logits, argmax=argmax)

    def end_epoch(self, epoch: int) -> None:
        if self.writer is not None:
            self.writer.end_epoch(epoch, self.keys)

    def val(self) -> tuple[torch.Tensor, float] | None:
        if self.reader is None:
            return None
        try:
            return self.reader.val()
        except Miss as e:
            self._miss(str(e))
            return None

    def record_val(self, preds: torch.Tensor, teacher_top1: float) -> None:
        if self.writer is not None:
            self.writer.record_val(preds, teacher_top1)

    def finish(self, accelerator) -> dict[str, Any] | None:
        """All ranks: wait for each other; rank 0 publishes a written cache and says so in an event."""
        accelerator.wait_for_everyone()
        summary = {"cached_batches": self.cached_batches, "live_batches": self.live_batches}
        if self.writer is None or not accelerator.is_main_process:
            if self.reader is not None and accelerator.is_main_process:
                self.emit(EVENT, status="read", name=self.name, **summary)
            return None
        status, manifest = self.writer.publish()
        self.emit(EVENT, status=status, name=manifest["name"], path=str(self.writer.final), key=manifest["key"],
                  bytes=manifest["bytes"], store=manifest["store"], epochs=manifest["epochs"],
                  manifest_sha256=sha256_file(self.writer.final / MANIFEST), **summary)
        log.info("teacher cache %s: %s, %s in %s", manifest["name"], status, human(manifest["bytes"]), self.writer.final)
        return manifest


@dataclass
class Layout:
    """The run's batch layout and the sizes the cache needs."""

    epochs: int
    start_epoch: int
    world: int
    rank: int
    steps: int
    batch_size: int
    num_classes: int
    val_rows: int
    device_type: str
    precision: str


def open_feed(cfg: JobConfig, options: CacheOptions, layout: Layout, live: Callable[[torch.Tensor], torch.Tensor],
              emit: Callable[..., Any], out: Path, device: torch.device, require_write: bool = False) -> TeacherFeed:
    """Decide for this rank, from the config and the store: read a cache (hit), write one, or
    neither; say which in a ``teacher_cache`` event. Every rank decides the same from the same
    files, so no collective is needed here.

    ``require_write`` (the teacher_outputs job): the cache must be written; over the cap is a
    :class:`ConfigError`.
    """
    dist = cfg.distillation
    mode = dist.teacher_cache
    feed = TeacherFeed(live, emit, layout.rank)
    if mode == OFF and not require_write:
        emit(EVENT, status="off", reason="distillation.teacher_cache is off")
        return feed
    fields = key_fields(cfg, layout.world, layout.device_type, layout.precision)
    key = cache_key(fields)
    if not require_write:
        found, reason = _find(mode, options, key, fields, dist, layout.epochs)
        if found is not None:
            path, manifest = found
            feed.reader, feed.name = CacheReader(path, manifest, layout.rank, device), manifest["name"]
            emit(EVENT, status="hit", name=manifest["name"], path=str(path), key=key, store=manifest["store"],
                 epochs=manifest["epochs"])
            log.info("teacher cache %s: hit; the teacher's outputs are read from %s", manifest["name"], path)
            return feed
        emit(EVENT, status="miss", name=None if mode == AUTO else mode, key=key, reason=reason)
        log.info("teacher cache: miss (%s); the teacher runs live", reason)
        if mode != AUTO:
            return feed
    feed.writer = _writer(cfg, options, layout, key, fields, emit, out, require_write)
    feed.name = feed.writer.manifest["name"] if feed.writer is not None else None
    return feed


def _find(mode: str, options: CacheOptions, key: str, fields: dict[str, Any], dist, epochs: int):
    """((path, manifest) or None, why not)."""
    if mode != AUTO:
        path = Path(mode)
        try:
            manifest = read_manifest(path)
            check_manifest(manifest, key, fields, dist, epochs)
        except Miss as e:
            return None, f"the named cache {path.name}: {e}"
        return (path, manifest), ""
    if options.store_dir is None:
        return None, "no cache store was given (--teacher-cache-dir)"
    reasons = []
    for path in sorted(options.store_dir.glob(f"{key[:20]}-*")):
        try:
            manifest = read_manifest(path)
            check_manifest(manifest, key, fields, dist, epochs)
        except Miss as e:
            reasons.append(f"{path.name}: {e}")
            continue
        return (path, manifest), ""
    return None, "; ".join(reasons) or "no cache with this key in the store"


def _writer(cfg: JobConfig, options: CacheOptions, layout: Layout, key: str, fields: dict[str, Any],
            emit: Callable[..., Any], out: Path, required: bool) -> CacheWriter | None:
    dist = cfg.distillation
    store = resolved_store(dataclasses.asdict(dist))
    why_not = None
    if options.store_dir is None:
        why_not = "no cache store was given (--teacher-cache-dir)"
    elif layout.start_epoch > 0:
        why_not = "a resumed run does not write a cache (its earlier epochs' outputs are gone)"
    estimate = estimate_bytes(store, layout.num_classes, dist.teacher_cache_topk, layout.epochs, layout.world,
                              layout.steps * layout.batch_size, layout.val_rows)
    if why_not is None and estimate > options.max_bytes:
        why_not = (f"it would take about {human(estimate)} ({estimate} bytes), over the cap of {human(options.max_bytes)} "
                   "(DISTILLERY_TEACHER_CACHE_MAX_BYTES / --teacher-cache-max-bytes)")
    if why_not is not None:
        if required:
            raise ConfigError("distillation.teacher_cache_store" if options.store_dir else "distillation.teacher_cache",
                              f"cannot write the teacher-output cache: {why_not}")
        emit(EVENT, status="refused", estimate_bytes=estimate, reason=why_not)
        log.info("teacher cache: not written (%s)", why_not)
        return None
    name = cache_name(key, store, dist.teacher_cache_topk, layout.epochs)
    final = options.store_dir / name
    # every rank derives the same partial folder from the run directory, so none has to be told
    partial = options.store_dir / f".partial-{name}-{hashlib.sha1(str(out.resolve()).encode()).hexdigest()[:10]}"
    manifest = {"format": CACHE_FORMAT, "key": key, "key_fields": fields, "name": name, "store": store,
                "topk": dist.teacher_cache_topk if store == "topk" else None, "epochs": layout.epochs,
                "world_size": layout.world, "batch_size": layout.batch_size, "steps_per_epoch": layout.steps,
                "num_classes": layout.num_classes, "estimate_bytes": estimate}
    if layout.rank == 0:
        shutil.rmtree(partial, ignore_errors=True)  # a crashed earlier try of this run
        partial.mkdir(parents=True)
    emit(EVENT, status="writing", name=name, estimate_bytes=estimate, store=store, epochs=layout.epochs)
    log.info("teacher cache %s: writing (%s estimated, %s)", name, human(estimate), store)
    return CacheWriter(partial, final, manifest, layout.rank)
