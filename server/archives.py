"""Checking and unpacking uploaded dataset archives (.zip, .tar.gz).

Everything is checked before anything is accepted: member names (no absolute paths, no ``..``,
nothing escaping the folder), member types (regular files and folders only: no symlinks, hard
links or devices), the number of members, their total unpacked size and its ratio to the archive's
size (a zip bomb is refused from its headers, before one byte is written, at the first member that
passes a limit), the ImageFolder layout
(train/ and val/ class folders) and that every image decodes with PIL. Extraction goes to a
temporary folder next to the destination and is renamed into place, so a dataset folder either
exists complete or not at all, with normal permissions (0755 folders, 0644 files).
"""
from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from deit_core.files import publish_modes

from .storage import IMAGE_EXTENSIONS, PathRefused, scan_dataset


class ArchiveRefused(ValueError):
    """The archive is unsafe or not a dataset; the message says why."""


def _check_name(name: str) -> None:
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise ArchiveRefused(f"member {name!r} has an absolute path")
    if ".." in p.parts:
        raise ArchiveRefused(f"member {name!r} escapes the archive folder ('..')")


RATIO_FLOOR = 1 << 20  # members and archives below 1 MiB unpacked are never refused for their ratio


class _Limits:
    """Running totals of the members seen so far; refuses at the first one that passes a limit."""

    def __init__(self, archive_size: int, max_files: int, max_bytes: int, max_ratio: int):
        self.max_files, self.max_ratio = max_files, max_ratio
        self.max_bytes = min(max_bytes, max(RATIO_FLOOR, archive_size * max_ratio))
        self.ratio_bound = self.max_bytes < max_bytes
        self.count = self.total = 0

    def add(self, name: str, size: int, compressed: int | None = None) -> None:
        self.count, self.total = self.count + 1, self.total + size
        if self.count > self.max_files:
            raise ArchiveRefused(f"more than {self.max_files} members (DISTILLERY_MAX_ARCHIVE_FILES)")
        if compressed is not None and size > RATIO_FLOOR and size > compressed * self.max_ratio:
            raise ArchiveRefused(f"member {name!r} expands {size // max(compressed, 1)}x (compression ratio "
                                 f"above {self.max_ratio}, DISTILLERY_MAX_ARCHIVE_RATIO)")
        if self.total > self.max_bytes:
            why = (f"more than {self.max_ratio}x the archive's size (compression ratio, DISTILLERY_MAX_ARCHIVE_RATIO)"
                   if self.ratio_bound else f"more than {self.max_bytes} bytes (DISTILLERY_MAX_ARCHIVE_BYTES)")
            raise ArchiveRefused(f"unpacks to {why}")


def _members(path: Path, max_files: int, max_bytes: int, max_ratio: int) -> str:
    """Check every member's name, type and the totals from the headers, before anything is written;
    return the archive type ('zip' | 'tar')."""
    limits = _Limits(path.stat().st_size, max_files, max_bytes, max_ratio)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                _check_name(info.filename)
                mode = (info.external_attr >> 16) & 0o170000
                if mode and mode not in (0o100000, 0o040000):
                    raise ArchiveRefused(f"member {info.filename!r} is a link or special file")
                limits.add(info.filename, info.file_size, info.compress_size)
        return "zip"
    try:
        with tarfile.open(path, "r:*") as tf:
            while (m := tf.next()) is not None:
                _check_name(m.name)
                if not (m.isfile() or m.isdir()):
                    raise ArchiveRefused(f"member {m.name!r} is a link or special file")
                limits.add(m.name, m.size)
                tf.members.clear()  # headers only: do not keep 100k TarInfo objects alive
    except tarfile.TarError as e:
        raise ArchiveRefused(f"not a .zip or .tar.gz archive ({e})") from None
    return "tar"


def _extract(path: Path, kind: str, dest: Path) -> None:
    if kind == "zip":
        with zipfile.ZipFile(path) as zf:
            zf.extractall(dest)
    else:
        with tarfile.open(path, "r:*") as tf:
            if hasattr(tarfile, "data_filter"):
                tf.extractall(dest, filter="data")  # the 'data' filter re-checks links and escapes
            else:
                _extract_tar_members(tf, dest)


def _extract_tar_members(tf: tarfile.TarFile, dest: Path) -> None:
    """Extraction filters (PEP 706) are missing from some Pythons distillery supports: 3.10 before
    3.10.12, 3.11 before 3.11.4, and Debian bookworm's 3.11.2 (its system Python, and the base of
    the stand-in container image), where ``extractall(filter=...)`` is a TypeError. There, only the
    folders and regular files are written, each target re-checked to lie inside ``dest``; links and
    special files were already refused by ``_members``, and are refused again here."""
    root = dest.resolve()
    for m in tf:
        target = (root / m.name).resolve()
        if target != root and root not in target.parents:
            raise ArchiveRefused(f"member {m.name!r} escapes the archive folder")
        if m.isdir():
            target.mkdir(parents=True, exist_ok=True)
        elif m.isfile():
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tf.extractfile(m)
            if src is None:
                raise ArchiveRefused(f"member {m.name!r} has no data")
            with src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
        else:
            raise ArchiveRefused(f"member {m.name!r} is a link or special file")


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


def unpack_dataset(archive: Path, dest: Path, max_files: int, max_bytes: int, max_ratio: int = 100) -> dict[str, int]:
    """Check ``archive`` and atomically create ``dest`` holding its train/ and val/ folders.

    Returns:
        the dataset counts (``num_classes``, ``num_train``, ``num_val``).
    Raises:
        ArchiveRefused: with the reason; nothing is left at ``dest``.
    """
    kind = _members(archive, max_files, max_bytes, max_ratio)
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
        publish_modes(tmp)  # mkdtemp made it 0700; readers (worker, other users' tools) need 0755/0644
        os.rename(tmp, dest)
        return counts
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
