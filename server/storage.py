"""Files on the storage volume: run directories, artifacts, datasets, and path checks.

Shared by the API (which reads) and the worker (which writes); both see the same
``DISTILLERY_STORAGE`` (one machine, or a shared volume in docker-compose).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff")


class PathRefused(ValueError):
    """A path is outside what the service may read, or is not what it must be."""


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (same filesystem: free), else copy; atomic via a temp name."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    if tmp.exists():
        tmp.unlink()
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copy2(src, tmp)
    os.replace(tmp, dst)
    tmp.unlink(missing_ok=True)  # dst was already a link to src: rename() of two links to one file does nothing


def is_under(path: Path, roots: tuple[Path, ...]) -> bool:
    return any(path == r or r in path.parents for r in roots)


def is_private(path: Path, private: tuple[Path, ...]) -> bool:
    """``path`` is (in) the service's own state: the secret key, the broker folder, the SQLite file
    (and its -wal/-journal siblings)."""
    return any(path == p or p in path.parents or (path.parent == p.parent and path.name.startswith(p.name + "-"))
               for p in private)


def check_links(root: Path, allowed: Callable[[Path], bool], depth: int = 2) -> None:
    """Refuse a symlink up to ``depth`` levels below ``root`` (class folders, their images) whose
    target is not ``allowed``: a link must not reach what the caller could not name directly."""
    level = [root]
    for _ in range(depth):
        below = []
        for folder in level:
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue
            for e in entries:
                if e.is_symlink():
                    target = Path(e.path).resolve()
                    if not allowed(target):
                        raise PathRefused(f"{Path(e.path).relative_to(root)} is a symlink to outside the folders you may use")
                if e.is_dir():
                    below.append(Path(e.path))
        level = below


def check_safe_path(raw: str) -> None:
    """Refuse ``..`` components outright, before any resolution, so traversal never gets a chance."""
    if not raw or "\x00" in raw:
        raise PathRefused("must be a non-empty path")
    if ".." in Path(raw).parts:
        raise PathRefused(f"'..' is not allowed in paths: {raw}")


def resolve_server_dir(raw: str, roots: tuple[Path, ...]) -> Path:
    """``raw`` resolved (symlinks followed) if it is an existing directory under one of ``roots``."""
    check_safe_path(raw)
    p = Path(raw)
    if not p.is_absolute():
        p = Path.cwd() / p
    p = p.resolve()
    if not is_under(p, roots):
        raise PathRefused(f"{raw} is outside the data folders this server offers you; "
                          "use one of your datasets (dataset:NAME/train) or upload an archive")
    if not p.exists():
        raise PathRefused(f"path does not exist: {raw}")
    if not p.is_dir():
        raise PathRefused(f"must be a directory (an ImageFolder root): {raw}")
    return p


def scan_imagefolder(root: Path) -> tuple[list[str], int]:
    """Class folder names and image count of one split; refuses an empty or flat folder."""
    if not root.is_dir():
        raise PathRefused(f"missing folder {root.name}/ (need train/<class>/*.png and val/<class>/*.png)")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise PathRefused(f"{root.name}/ has no class folders (need {root.name}/<class>/<image>)")
    count = sum(1 for c in classes for f in (root / c).iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
    if count == 0:
        raise PathRefused(f"{root.name}/ has no images")
    return classes, count


def scan_dataset(root: Path) -> dict[str, int]:
    """Check ``root`` holds train/ and val/ ImageFolders with the same classes; return counts."""
    train_classes, n_train = scan_imagefolder(root / "train")
    val_classes, n_val = scan_imagefolder(root / "val")
    if set(val_classes) - set(train_classes):
        raise PathRefused(f"val/ has classes missing from train/: {sorted(set(val_classes) - set(train_classes))}")
    return {"num_classes": len(train_classes), "num_train": n_train, "num_val": n_val}
