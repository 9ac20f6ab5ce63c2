"""What the training loop asks per batch: the teacher's outputs, from a cache on a hit, else from
the live teacher (and, when writing, into a new cache); and :func:`open_feed`, which decides per run
whether to read a cache, write one, or neither, and says which in a ``teacher_cache`` event.

- **Reading** verifies the key, the stored form against the loss, the epochs, each file's sha256
  and every row's sample and label; any mismatch is a *miss*: logged as a ``teacher_cache``
  event with the reason, and the teacher runs live from there on. Never silently wrong.
- **Size**: estimated before anything is written; over ``max_bytes`` the cache is not written
  (event ``refused``) and the run goes on with the live teacher.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from ..config import ConfigError, JobConfig
from ..files import sha256_file
from ..losses import TeacherTargets
from .codecs import AUTO, OFF, codec, resolved_store
from .fingerprint import MEMO_FILE
from .key import CACHE_FORMAT, cache_name, key_digest, key_fields
from .manifest import EVENT, MANIFEST, CacheStatus, Manifest, Miss
from .store import CacheReader, CacheWriter, check_serves, estimate_bytes, human, sampler_keys

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 8 << 30  # the service's DISTILLERY_TEACHER_CACHE_MAX_BYTES default


@dataclass(frozen=True)
class CacheOptions:
    """Where the run may find and write caches (the service's store; None: only a named cache
    path is read, nothing is written, and the datasets' fingerprints are hashed without a memo)
    and the largest cache it may write."""

    store_dir: Path | None = None
    max_bytes: int = DEFAULT_MAX_BYTES


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
        self.emit(EVENT, status=CacheStatus.MISS, name=self.name, rank=self.rank, reason=reason)
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

    def finish(self, accelerator) -> Manifest | None:
        """All ranks: wait for each other; rank 0 publishes a written cache and says so in an event."""
        accelerator.wait_for_everyone()
        summary = {"cached_batches": self.cached_batches, "live_batches": self.live_batches}
        if self.writer is None or not accelerator.is_main_process:
            if self.reader is not None and accelerator.is_main_process:
                self.emit(EVENT, status=CacheStatus.READ, name=self.name, **summary)
            return None
        status, manifest = self.writer.publish()
        self.emit(EVENT, status=status, name=manifest.name, path=str(self.writer.final), key=manifest.key,
                  bytes=manifest.bytes, store=manifest.store, epochs=manifest.epochs,
                  manifest_sha256=sha256_file(self.writer.final / MANIFEST), **summary)
        log.info("teacher cache %s: %s, %s in %s", manifest.name, status, human(manifest.bytes), self.writer.final)
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
        emit(EVENT, status=CacheStatus.OFF, reason="distillation.teacher_cache is off")
        return feed
    memo = options.store_dir / MEMO_FILE if options.store_dir is not None else None
    fields = key_fields(cfg, layout.world, layout.device_type, layout.precision, memo=memo)
    key = key_digest(fields)
    if not require_write:
        found, reason = _find(mode, options, key, fields, dist, layout.epochs)
        if found is not None:
            path, manifest = found
            feed.reader, feed.name = CacheReader(path, manifest, layout.rank, device), manifest.name
            emit(EVENT, status=CacheStatus.HIT, name=manifest.name, path=str(path), key=key, store=manifest.store,
                 epochs=manifest.epochs)
            log.info("teacher cache %s: hit; the teacher's outputs are read from %s", manifest.name, path)
            return feed
        emit(EVENT, status=CacheStatus.MISS, name=None if mode == AUTO else mode, key=key, reason=reason)
        log.info("teacher cache: miss (%s); the teacher runs live", reason)
        if mode != AUTO:
            return feed
    feed.writer = _writer(cfg, options, layout, key, fields, emit, out, require_write)
    feed.name = feed.writer.manifest.name if feed.writer is not None else None
    return feed


def _find(mode: str, options: CacheOptions, key: str, fields: dict[str, Any], dist, epochs: int):
    """((path, manifest) or None, why not)."""
    if mode != AUTO:
        path = Path(mode)
        try:
            manifest = Manifest.read(path)
            check_serves(manifest, key, fields, dist, epochs)
        except Miss as e:
            return None, f"the named cache {path.name}: {e}"
        return (path, manifest), ""
    if options.store_dir is None:
        return None, "no cache store was given (--teacher-cache-dir)"
    reasons = []
    for path in sorted(options.store_dir.glob(f"{key[:20]}-*")):
        try:
            manifest = Manifest.read(path)
            check_serves(manifest, key, fields, dist, epochs)
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
        emit(EVENT, status=CacheStatus.REFUSED, estimate_bytes=estimate, reason=why_not)
        log.info("teacher cache: not written (%s)", why_not)
        return None
    form = codec(store)
    name = cache_name(key, form.label(dist.teacher_cache_topk), layout.epochs)
    final = options.store_dir / name
    # every rank derives the same partial folder from the run directory, so none has to be told
    partial = options.store_dir / f".partial-{name}-{hashlib.sha1(str(out.resolve()).encode()).hexdigest()[:10]}"
    manifest = Manifest(format=CACHE_FORMAT, key=key, key_fields=fields, name=name, store=store,
                        topk=form.stored_topk(dist.teacher_cache_topk), epochs=layout.epochs, world_size=layout.world,
                        batch_size=layout.batch_size, steps_per_epoch=layout.steps, num_classes=layout.num_classes,
                        estimate_bytes=estimate)
    if layout.rank == 0:
        shutil.rmtree(partial, ignore_errors=True)  # a crashed earlier try of this run
        partial.mkdir(parents=True)
    emit(EVENT, status=CacheStatus.WRITING, name=name, estimate_bytes=estimate, store=store, epochs=layout.epochs)
    log.info("teacher cache %s: writing (%s estimated, %s)", name, human(estimate), store)
    return CacheWriter(partial, final, manifest, layout.rank)
