"""Small file helpers shared by the engine, the exporter and the service (no torch import).

Everything distillery publishes (a dataset, a ``final/``, an export) is built in a temp directory
beside its destination and renamed into place, so a reader never sees half of it. ``mkdtemp`` and
``mkstemp`` create private (0700/0600) paths; the helpers here give them the modes any other new
file would get, so published models and datasets stay readable by the service's other processes.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temp_dir_beside(target: Path) -> Path:
    """A new empty directory next to ``target`` (same filesystem, so ``os.replace`` is atomic)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    os.chmod(tmp, 0o777 & ~current_umask())
    return tmp


def replace_dir(tmp: Path, target: Path) -> None:
    """Move the finished ``tmp`` to ``target``; an existing ``target`` is removed only afterwards."""
    old = None
    if target.exists():
        if any(target.iterdir()):
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
        else:
            target.rmdir()
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON via a temp file + os.replace, so a reader never sees half a file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.chmod(tmp, 0o666 & ~current_umask())
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class StorageError(OSError):
    """A write failed for lack of space, quota or permission; ``str()`` is the plain reason
    ("no space left on device writing checkpoints/last.pt"), which ends up in the job's error."""

    def __str__(self) -> str:
        return str(self.args[1]) if len(self.args) > 1 else super().__str__()


def storage_error(e: OSError, what: str) -> StorageError:
    """``e`` restated as "<what went wrong> writing <what>"."""
    reason = os.strerror(e.errno).lower() if e.errno else str(e)
    return StorageError(e.errno, f"{reason} writing {what}")


def write_temp_beside(path: Path, data: bytes, what: str) -> Path:
    """Write ``data`` to a hidden temp file next to ``path`` and fsync it; the caller renames it.
    On failure the temp file is removed and a :class:`StorageError` naming ``what`` is raised."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise storage_error(e, what) from e
    return tmp


def publish_modes(root: Path) -> None:
    """Give a tree built in a ``mkdtemp`` folder the modes any new file would get (0755 folders,
    0644 files under the usual umask), so the service's other processes can read it."""
    mask = current_umask()
    os.chmod(root, 0o777 & ~mask)
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            os.chmod(os.path.join(dirpath, d), 0o777 & ~mask)
        for f in filenames:
            os.chmod(os.path.join(dirpath, f), 0o666 & ~mask)
