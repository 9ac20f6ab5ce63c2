"""Server paths out of what non-admins read: a job's config, its logs (the run's command line), errors,
artifact metadata, datasets.

Where storage, the broker's folder or a worker's scratch live says how the deployment is laid out and
names other users' folders; a user needs none of it. So every string of a non-admin's JSON answer is
rewritten: a folder of one of *their* datasets becomes ``dataset:NAME`` (``data.train`` then reads
``dataset:NAME/train``, which is also what a resubmission may send), and the service's own folders
become ``<storage>``, ``<broker>``, ``<scratch>``, ``<python>``. Folders under the shared data roots stay: the
deployment offers them by name, and the user typed them. Admins see everything as stored.

Done on the way out (one walk over the answer) rather than in each serializer, so a field added
later cannot forget it.
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

from ..settings import Settings

# A path prefix ends at a separator, the end of the string, or a character a path of ours does not hold
# right after a folder name (quotes, spaces, punctuation of a command line or a message).
_END = r"(?=[/\s'\",:;)\]}]|$)"


def internal_folders(settings: Settings) -> list[tuple[str, str]]:
    """The service's own folders and their labels: storage, the broker's folder, scratch, and the
    Python environment the runs start from (the first word of a run's command line in its log). A
    system-wide one (``/usr``) is left alone: it says nothing about this deployment."""
    out = [(settings.storage_path, "<storage>"), (Path(settings.broker_dir).resolve(), "<broker>")]
    if settings.scratch:
        out.append((Path(settings.scratch).resolve(), "<scratch>"))
    if len(Path(sys.prefix).parts) > 2:
        out.append((Path(sys.prefix), "<python>"))
    return [(str(p), label) for p, label in out]


def dataset_folders(datasets: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """``(name, path)`` of the caller's datasets -> ``(folder, "dataset:NAME")``, the stored path and its
    resolved form (they differ when a registered folder is reached through a symlink)."""
    out = []
    for name, path in datasets:
        for form in {path, os.path.realpath(path)}:
            out.append((form, f"dataset:{name}"))
    return out


def rewriter(folders: list[tuple[str, str]]) -> Callable[[str], str]:
    """A function replacing each folder (longest first, so a dataset inside storage wins) by its label."""
    labels = dict(sorted(((f.rstrip("/"), label) for f, label in folders if f.rstrip("/")), key=lambda x: -len(x[0])))
    if not labels:
        return lambda s: s
    pattern = re.compile("(?:" + "|".join(re.escape(f) for f in labels) + ")" + _END)
    return lambda s: pattern.sub(lambda m: labels[m.group(0)], s)


def redact(value: Any, rewrite: Callable[[str], str]) -> Any:
    """``value`` (parsed JSON) with every string, at any depth, passed through ``rewrite``."""
    if isinstance(value, str):
        return rewrite(value)
    if isinstance(value, dict):
        return {k: redact(v, rewrite) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, rewrite) for v in value]
    return value
