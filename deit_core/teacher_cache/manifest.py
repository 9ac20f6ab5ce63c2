"""A cache's ``manifest.json`` as a typed record, and the statuses a run reports about its cache.

The manifest is what a reader checks before trusting a cache (key, stored form, epochs, each file's
size and sha256) and what the worker registers as the cache's artifact, so both read it through
:class:`Manifest` rather than by string keys. It imports no torch: the worker reads manifests too.
"""
from __future__ import annotations

import dataclasses
import enum
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..files import write_json_atomic
from .key import CACHE_FORMAT

MANIFEST = "manifest.json"
EVENT = "teacher_cache"  # the metrics.jsonl event a run reports its cache's status in


class CacheStatus(enum.StrEnum):
    """The ``status`` of a ``teacher_cache`` event (a str, so events and comparisons stay plain JSON)."""

    OFF = "off"            # distillation.teacher_cache is off
    HIT = "hit"            # a matching cache will be read
    MISS = "miss"          # none matched, or a read failed a check: the teacher runs live from there on
    REFUSED = "refused"    # no cache is written (no store, a resumed run, over the size cap)
    WRITING = "writing"    # this run writes a cache
    WRITTEN = "written"    # rank 0 published the cache this run wrote
    EXISTS = "exists"      # an identical cache was published meanwhile; this run's copy was dropped
    READ = "read"          # the run ended having read from a cache (how many batches, cached and live)


class Miss(Exception):
    """The cache cannot serve this run (the message says why)."""


@dataclass(frozen=True)
class FileRecord:
    """One file of a cache, as its manifest pins it."""

    bytes: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """``<cache>/manifest.json``: the key and its fields, what is stored, the batch layout it was
    written for, and (once published) every file's size and sha256 and their total."""

    format: int
    key: str
    key_fields: dict[str, Any]
    name: str
    store: str
    topk: int | None
    epochs: int
    world_size: int
    batch_size: int
    steps_per_epoch: int
    num_classes: int
    estimate_bytes: int
    files: dict[str, FileRecord] = field(default_factory=dict)
    bytes: int = 0

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Any, where: str = "the manifest") -> Manifest:
        """Raise :class:`Miss` when ``data`` is not a manifest of this format (missing or mistyped fields)."""
        if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
            raise Miss(f"{where} is not a teacher-output cache of format {CACHE_FORMAT}")
        names = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
        missing = sorted(required - set(data))
        if missing:
            raise Miss(f"{where} lacks {', '.join(missing)}")
        try:
            files = {str(n): FileRecord(bytes=int(r["bytes"]), sha256=str(r["sha256"]))
                     for n, r in (data.get("files") or {}).items()}
            return cls(**{**{k: v for k, v in data.items() if k in names}, "files": files})
        except (TypeError, KeyError, ValueError, AttributeError) as e:
            raise Miss(f"{where} has a malformed field: {e}") from None

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        """The manifest of the cache in ``folder``; :class:`Miss` when it is absent or unreadable."""
        try:
            data = json.loads((folder / MANIFEST).read_text())
        except (OSError, ValueError) as e:
            raise Miss(f"no readable {MANIFEST} in {folder}: {e}") from None
        return cls.from_json(data, str(folder))

    def write(self, folder: Path) -> Path:
        """Write ``folder/manifest.json`` atomically; returns its path."""
        path = folder / MANIFEST
        write_json_atomic(path, self.to_json())
        return path
