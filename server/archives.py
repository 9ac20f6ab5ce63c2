"""Checking and unpacking uploaded dataset archives (.zip, .tar.gz).

Everything is checked before anything is accepted: member names (no absolute paths, no ``..``,
nothing escaping the folder), member types (regular files and folders only: no symlinks, hard
links or devices), the number of members and their total unpacked size, the ImageFolder layout
(train/ and val/ class folders) and that every image decodes with PIL. Extraction goes to a
temporary folder next to the destination and is renamed into place, so a dataset folder either
exists complete or not at all.
"""
from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from .storage import IMAGE_EXTENSIONS, PathRefused, scan_dataset


class ArchiveRefused(ValueError):
    """The archive is unsafe or not a dataset; the message says why."""


def _check_name(name: str) -> None:
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise ArchiveRefused(f"member {name!r} has an absolute path")
    if ".." in p.parts:
        raise ArchiveRefused(f"member {name!r} escapes the archive folder ('..')")


def _tally(count: int, total: int, size: int, max_files: int, max_bytes: int) -> tuple[int, int]:
    """Add one member to the running totals; refuse as soon as a limit is passed (before extraction)."""
    count, total = count + 1, total + size
    if count > max_files:
        raise ArchiveRefused(f"more than {max_files} members")
    if total > max_bytes:
        raise ArchiveRefused(f"unpacks to more than {max_bytes} bytes")
    return count, total


def _members(path: Path, max_files: int, max_bytes: int) -> str:
    """Check every member's name, type and the totals; return the archive type ('zip' | 'tar')."""
    total = count = 0
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                _check_name(info.filename)
                mode = (info.external_attr >> 16) & 0o170000
                if mode and mode not in (0o100000, 0o040000):
                    raise ArchiveRefused(f"member {info.filename!r} is a link or special file")
                count, total = _tally(count, total, info.file_size, max_files, max_bytes)
        return "zip"
    try:
        with tarfile.open(path, "r:*") as tf:
            for m in tf:
                _check_name(m.name)
                if not (m.isfile() or m.isdir()):
                    raise ArchiveRefused(f"member {m.name!r} is a link or special file")
                count, total = _tally(count, total, m.size, max_files, max_bytes)
    except tarfile.TarError as e:
        raise ArchiveRefused(f"not a .zip or .tar.gz archive ({e})") from None
    return "tar"


def _extract(path: Path, kind: str, dest: Path) -> None:
    if kind == "zip":
        with zipfile.ZipFile(path) as zf:
            zf.extractall(dest)
    else:
        with tarfile.open(path, "r:*") as tf:
            tf.extractall(dest, filter="data")  # the 'data' filter re-checks links and escapes


def _dataset_root(folder: Path) -> Path:
    """The folder holding train/ and val/: the top, or a single top-level directory."""
    if (folder / "train").is_dir():
        return folder
    entries = [e for e in folder.iterdir() if not e.name.startswith((".", "__MACOSX"))]
    if len(entries) == 1 and entries[0].is_dir() and (entries[0] / "train").is_dir():
        return entries[0]
    raise ArchiveRefused("no train/ folder at the top of the archive (need train/<class>/* and val/<class>/*)")


def _check_images(root: Path) -> None:
    from PIL import Image, UnidentifiedImageError

    for split in ("train", "val"):
        for f in (root / split).rglob("*"):
            if f.is_symlink():
                raise ArchiveRefused(f"{f.relative_to(root)} is a symlink")
            if not f.is_file():
                continue
            if f.suffix.lower() not in IMAGE_EXTENSIONS:
                raise ArchiveRefused(f"{f.relative_to(root)} is not an image file")
            try:
                with Image.open(f) as im:
                    im.verify()
            except (UnidentifiedImageError, OSError, SyntaxError) as e:
                raise ArchiveRefused(f"{f.relative_to(root)} is not a decodable image ({e})") from None


def unpack_dataset(archive: Path, dest: Path, max_files: int, max_bytes: int) -> dict[str, int]:
    """Check ``archive`` and atomically create ``dest`` holding its train/ and val/ folders.

    Returns:
        the dataset counts (``num_classes``, ``num_train``, ``num_val``).
    Raises:
        ArchiveRefused: with the reason; nothing is left at ``dest``.
    """
    kind = _members(archive, max_files, max_bytes)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        _extract(archive, kind, tmp)
        root = _dataset_root(tmp)
        try:
            counts = scan_dataset(root)
        except PathRefused as e:
            raise ArchiveRefused(str(e)) from None
        _check_images(root)
        if root != tmp:
            final_tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
            os.rmdir(final_tmp)
            os.rename(root, final_tmp)
            shutil.rmtree(tmp)
            tmp = final_tmp
        os.rename(tmp, dest)
        return counts
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
