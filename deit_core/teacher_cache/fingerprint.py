"""A dataset's fingerprint for the cache key: sha256 over every file's relative path and the sha256
of its bytes, with a memo so a re-scan reads no image.

Why content: the key decides whose teacher outputs a run trusts, across users. A fingerprint of
path, size and mtime can be forged by anyone who can upload a tar (tar sets mtimes): a blank copy
with the shared data's names, sizes and mtimes got the real data's key, and its cache was read as a
hit by another user's student, which trained against near-constant logits. Only the bytes decide
what the teacher sees, so only the bytes decide the fingerprint (the same images elsewhere share a
cache; a folder's absolute path is not part of it).

Why a memo: hashing a large ImageFolder on every job would cost a full read of the data. The memo
(an SQLite file beside the caches, ``<store>/.fingerprint-memo.sqlite3``, which only the service
writes) maps each file's path to the sha256 of its bytes, and is trusted only while the file's
size, mtime, inode, device *and ctime* are what they were when it was hashed. No ordinary process
can set ctime: any write, ``utime``, rename or chmod moves it to the current time.
A file whose ctime or mtime is within :data:`SETTLE_NS` of the scan's start is hashed but not
memoized (a change within the same timestamp tick would otherwise keep its ctime; git's "racy
clean" problem). Files are read in 1 MiB chunks, the memo is read one folder at a time and
written in transactions of up to :data:`FLUSH_ROWS` rows (one sync each: a sync per folder cost
more than the hashing), so memory stays bounded whatever the dataset's size. A transaction is
atomic, and several ranks or runs can scan at once. A memo that cannot be opened or
written only costs time: the files are hashed and a warning logged.

No torch and no service imports: the engine computes it in :func:`~.key.key_fields`.
"""
from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

FINGERPRINT_VERSION = "content-sha256-v1"  # hashed first: a change of scheme never matches an old fingerprint
MEMO_FILE = ".fingerprint-memo.sqlite3"
SETTLE_NS = 2_000_000_000  # files changed this recently are not memoized (timestamp granularity, clock skew)
CHUNK = 1 << 20
FLUSH_ROWS = 10_000  # memo rows written per transaction (bounds the memory they take, about 2 MiB)


@dataclass(frozen=True)
class Scan:
    """A fingerprint and what it cost: files seen, files whose bytes were read, and those bytes."""

    fingerprint: str
    files: int
    hashed_files: int
    hashed_bytes: int


def stat_signature(st: os.stat_result) -> str:
    """What must be unchanged for a memoized sha256 to stand (ctime: no user can set it)."""
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}:{st.st_dev}"


def hash_file(path: str) -> tuple[str, os.stat_result, bool]:
    """(sha256, the stat of the bytes hashed, whether the file stayed unchanged while it was read):
    the stat comes from the open file, so it describes what was read even if the path is swapped."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        before = os.fstat(f.fileno())
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
        after = os.fstat(f.fileno())
    return h.hexdigest(), before, stat_signature(before) == stat_signature(after)


class Memo:
    """The memo table; every method degrades to "no memo" (with one warning) on an SQLite error."""

    def __init__(self, path: Path | None):
        self.db: sqlite3.Connection | None = None
        self.pending: list[tuple[str, str, str, str]] = []
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, timeout=60, isolation_level=None)
            self.db.execute("CREATE TABLE IF NOT EXISTS memo (dir TEXT NOT NULL, name TEXT NOT NULL, "
                            "stat TEXT NOT NULL, sha256 TEXT NOT NULL, PRIMARY KEY (dir, name))")
        except (sqlite3.Error, OSError) as e:
            self._fail(path, e)

    def _fail(self, where, e: Exception) -> None:
        log.warning("dataset fingerprint memo %s unusable (%s); hashing every file", where, e)
        if self.db is not None:
            self.db.close()
        self.db = None

    def folder(self, dirpath: str) -> dict[str, tuple[str, str]]:
        """{file name: (stat signature, sha256)} memoized for one folder."""
        if self.db is None:
            return {}
        try:
            rows = self.db.execute("SELECT name, stat, sha256 FROM memo WHERE dir = ?", (dirpath,)).fetchall()
        except sqlite3.Error as e:
            self._fail(dirpath, e)
            return {}
        return {name: (stat, sha) for name, stat, sha in rows}

    def store(self, dirpath: str, rows: list[tuple[str, str, str]]) -> None:
        """Memoize ``[(name, stat signature, sha256)]`` of one folder; written :data:`FLUSH_ROWS` at a time."""
        self.pending += [(dirpath, *row) for row in rows]
        if len(self.pending) >= FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        """Write the pending rows in one transaction."""
        rows, self.pending = self.pending, []
        if self.db is None or not rows:
            return
        try:
            with self.db:
                self.db.execute("BEGIN IMMEDIATE")
                self.db.executemany("INSERT OR REPLACE INTO memo (dir, name, stat, sha256) VALUES (?, ?, ?, ?)", rows)
        except sqlite3.Error as e:
            self._fail("writing", e)

    def close(self) -> None:
        self.flush()
        if self.db is not None:
            self.db.close()


def scan(root: str | os.PathLike, memo: Path | None = None, settle_ns: int = SETTLE_NS) -> Scan:
    """Fingerprint the folder ``root`` (every file below it, links followed as the data loader
    does), reading only the files the memo at ``memo`` cannot vouch for (None: no memo)."""
    start = time.time_ns()
    h = hashlib.sha256(FINGERPRINT_VERSION.encode() + b"\n")
    base = Path(root)
    book = Memo(memo)
    files = hashed = nbytes = 0
    try:
        for dirpath, dirnames, filenames in os.walk(base, followlinks=True):
            dirnames.sort()
            known, new = book.folder(os.path.abspath(dirpath)), []
            rel = Path(dirpath).relative_to(base).as_posix()
            prefix = "" if rel == "." else rel + "/"
            for name in sorted(filenames):
                path = os.path.join(dirpath, name)
                sig = stat_signature(os.stat(path))
                memoized = known.get(name)
                if memoized is not None and memoized[0] == sig:
                    sha = memoized[1]
                else:
                    sha, st, steady = hash_file(path)
                    hashed, nbytes = hashed + 1, nbytes + st.st_size
                    if steady and max(st.st_ctime_ns, st.st_mtime_ns) < start - settle_ns:
                        new.append((name, stat_signature(st), sha))
                files += 1
                h.update(f"{prefix}{name}\0{sha}\n".encode())
            book.store(os.path.abspath(dirpath), new)
    finally:
        book.close()
    return Scan(h.hexdigest(), files, hashed, nbytes)


def dataset_fingerprint(root: str | os.PathLike, memo: Path | None = None) -> str:
    """:func:`scan`'s fingerprint, logged with what it cost."""
    t0 = time.perf_counter()
    result = scan(root, memo)
    log.info("dataset fingerprint of %s: %d files, %d read (%d bytes), %d from the memo, %.2f s", root, result.files,
             result.hashed_files, result.hashed_bytes, result.files - result.hashed_files, time.perf_counter() - t0)
    return result.fingerprint
