"""The worker's side of the teacher-output cache (deit_core/teacher_cache/).

- Runs get the store ``<storage>/teacher_cache`` and the size cap (``--teacher-cache-dir``,
  ``--teacher-cache-max-bytes`` from ``DISTILLERY_TEACHER_CACHE_MAX_BYTES``). The store also holds
  the runs' memo of the datasets' content hashes (deit_core/teacher_cache/fingerprint.py): it is
  in the storage area, which users cannot write, so a memo entry cannot be forged.
- A cache a run wrote (its ``teacher_cache`` event, status ``written``) becomes an artifact of that
  job: format ``teacher_outputs``, kind ``cache``, ``name`` = the cache's name, ``path`` = its
  ``manifest.json`` (what a download returns), ``sha256`` = the manifest's sha256 (the manifest
  lists every file's sha256, so it pins the whole cache), ``size`` = the whole cache's bytes.
- A ``teacher_outputs`` job ends there: no export; its waiting students get the teacher checkpoint
  and the cache's name.
- A named cache in a config (``distillation.teacher_cache``) is resolved to its folder.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from sqlalchemy import select

from deit_core.config import JobConfig
from deit_core.files import sha256_file
from deit_core.teacher_cache.manifest import EVENT, MANIFEST, CacheStatus, Manifest
from server.models import Artifact
from server.settings import Settings
from server.vocabulary import RUNNING, SUCCEEDED, TEACHER_OUTPUTS

from .artifacts import add_row
from .attempt import Attempt
from .run_contract import METRICS, TEACHER_CACHE_STORE

CACHE_KIND, CACHE_FORMAT = "cache", TEACHER_OUTPUTS  # the artifact format is spelt like the job kind
__all__ = ["TEACHER_OUTPUTS", "finish_teacher_outputs", "register", "resolve_name", "train_args"]
NOT_NAMES = ("auto", "off")


def store_path(settings: Settings) -> Path:
    return settings.storage_path / TEACHER_CACHE_STORE


def train_args(settings: Settings) -> list[str]:
    """What every training command gets: where caches live and the largest one a run may write."""
    return ["--teacher-cache-dir", str(store_path(settings)),
            "--teacher-cache-max-bytes", str(settings.teacher_cache_max_bytes)]


def resolve_name(s, config: JobConfig) -> JobConfig:
    """``distillation.teacher_cache: NAME`` -> the newest cache artifact of that name's folder."""
    dist = config.distillation
    if dist is None or dist.teacher_cache in NOT_NAMES:
        return config
    name = dist.teacher_cache
    art = s.scalar(select(Artifact).where(Artifact.format == CACHE_FORMAT, Artifact.name == name)
                   .order_by(Artifact.id.desc()).limit(1))
    if art is None:
        raise ValueError(f"distillation.teacher_cache: no teacher-output cache named {name!r} exists any more")
    return dataclasses.replace(config, distillation=dataclasses.replace(dist, teacher_cache=str(Path(art.path).parent)))


def published(run_dir: Path, statuses: tuple[str, ...]) -> list[dict[str, Any]]:
    """The run's ``teacher_cache`` events with one of ``statuses`` (rank 0 writes them)."""
    try:
        lines = (run_dir / METRICS).read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if isinstance(ev, dict) and ev.get("event") == EVENT and ev.get("status") in statuses:
            out.append(ev)
    return out


def register(attempt: Attempt, run_dir: Path, statuses: tuple[str, ...] = (CacheStatus.WRITTEN,)) -> list[tuple[int, str]]:
    """Register the caches the run published as artifacts of its job; returns [(artifact id, name)]."""
    done = []
    for ev in published(run_dir, statuses):
        folder = Path(ev["path"])
        manifest_path = folder / MANIFEST
        manifest = Manifest.read(folder)
        meta = {"store": manifest.store, "topk": manifest.topk, "epochs": manifest.epochs,
                "key": manifest.key, "key_fields": manifest.key_fields, "world_size": manifest.world_size,
                "batch_size": manifest.batch_size, "num_classes": manifest.num_classes,
                "files": len(manifest.files), "estimate_bytes": manifest.estimate_bytes, "folder": str(folder)}
        art_id = add_row(attempt, kind=CACHE_KIND, format=CACHE_FORMAT, path=str(manifest_path), size=manifest.bytes,
                         sha256=sha256_file(manifest_path), meta=meta, name=manifest.name)
        attempt.log.info("registered teacher-output cache %s as artifact %d (%d bytes)", manifest.name, art_id,
                         manifest.bytes)
        done.append((art_id, manifest.name))
    return done


def finish_teacher_outputs(attempt: Attempt, celery, settings: Settings, run_dir: Path,
                           teacher_checkpoint: int | str | None) -> bool:
    """A teacher_outputs job after its run: register the cache (written now, or found already
    published by an identical run), release the students waiting on it with the teacher checkpoint
    (as the job's stored config names it: an artifact id stays an id) and the cache's name, and
    succeed (False: the state changed meanwhile, e.g. a cancel). No export."""
    caches = register(attempt, run_dir, (CacheStatus.WRITTEN, CacheStatus.EXISTS))
    if not caches:
        raise RuntimeError("the teacher_outputs run ended without publishing a cache (no teacher_cache event)")
    _, name = caches[-1]
    released = attempt.release_children(celery, settings, teacher_checkpoint, teacher_cache=name)
    if released:
        attempt.log.info("released students %s with teacher-output cache %s", released, name)
    return attempt.finish(SUCCEEDED, from_states=RUNNING)
