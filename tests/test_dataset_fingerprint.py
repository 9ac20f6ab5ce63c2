"""Dataset fingerprints (deit_core/teacher_cache/fingerprint.py): by the files' bytes, not by what a
tar can forge (names, sizes, mtimes), and memoized so that a re-scan of unchanged data reads no
image, while a change the memo could miss (same size, forged mtime) is still caught by ctime/inode.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from deit_core.teacher_cache.fingerprint import MEMO_FILE, dataset_fingerprint, scan

SETTLE_NS = 50_000_000  # the tests' own settle window, so they need not wait the default 2 s
FILES = {"train/0/a.png": b"A" * 300, "train/0/b.png": b"B" * 200, "train/1/c.png": b"C" * 100, "val/1/d.png": b"D" * 50}


def write_folder(root: Path, files: dict[str, bytes], mtime_ns: int = 1_600_000_000_123_456_789) -> Path:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        os.utime(p, ns=(mtime_ns, mtime_ns))
    return root


def settled(root: Path) -> Path:
    """Wait out the settle window, so the memo may keep the files just written."""
    time.sleep(2 * SETTLE_NS / 1e9)
    return root


def stats(root: Path) -> dict[str, tuple[int, int]]:
    return {p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def test_same_names_sizes_and_mtimes_with_other_bytes_differ(tmp_path):
    real = write_folder(tmp_path / "real", FILES)
    blank = write_folder(tmp_path / "blank", {rel: bytes(len(data)) for rel, data in FILES.items()})
    assert stats(real) == stats(blank)  # all that a path/size/mtime fingerprint saw is equal
    assert dataset_fingerprint(real) != dataset_fingerprint(blank)
    one_byte = write_folder(tmp_path / "one-byte", {**FILES, "val/1/d.png": b"D" * 49 + b"E"})
    assert dataset_fingerprint(one_byte) != dataset_fingerprint(real)


def test_the_same_bytes_elsewhere_share_a_fingerprint_and_names_count(tmp_path):
    """A copy of the same images (another path, other mtimes) is the same data: it may share a cache."""
    real = write_folder(tmp_path / "real", FILES)
    copy = write_folder(tmp_path / "elsewhere" / "copy", FILES, mtime_ns=1_700_000_000_000_000_000)
    assert dataset_fingerprint(real) == dataset_fingerprint(copy)
    relabeled = write_folder(tmp_path / "relabeled", {rel.replace("train/1/", "train/0/"): d for rel, d in FILES.items()})
    assert dataset_fingerprint(relabeled) != dataset_fingerprint(real)  # a file moved to another class


def test_an_unchanged_rescan_reads_no_bytes(tmp_path):
    root = settled(write_folder(tmp_path / "data", FILES))
    memo = tmp_path / "store" / MEMO_FILE
    first = scan(root, memo, SETTLE_NS)
    assert (first.files, first.hashed_files, first.hashed_bytes) == (4, 4, 650)
    assert memo.is_file()
    again = scan(root, memo, SETTLE_NS)
    assert (again.fingerprint, again.files, again.hashed_files, again.hashed_bytes) == (first.fingerprint, 4, 0, 0)
    assert first.fingerprint == scan(root).fingerprint  # the memo changes the cost, never the answer


def test_a_rewrite_with_forged_size_and_mtime_is_caught(tmp_path):
    """In place (same inode; ctime moves) and by a rename over the file (new inode): both are re-read."""
    root = settled(write_folder(tmp_path / "data", FILES))
    memo = tmp_path / MEMO_FILE
    before = scan(root, memo, SETTLE_NS)
    target = root / "train/0/a.png"
    st = target.stat()
    with open(target, "r+b") as f:  # same inode, same size
        f.write(b"X" * 300)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (target.stat().st_ino, target.stat().st_size, target.stat().st_mtime_ns) == (st.st_ino, st.st_size, st.st_mtime_ns)
    after = scan(settled(root), memo, SETTLE_NS)
    assert after.hashed_files == 1 and after.fingerprint != before.fingerprint
    assert after.fingerprint == scan(root).fingerprint

    swapped = root / "train/1/.c.png.new"
    swapped.write_bytes(b"Y" * 100)
    c = root / "train/1/c.png"
    os.utime(swapped, ns=(c.stat().st_atime_ns, c.stat().st_mtime_ns))
    os.replace(swapped, c)
    final = scan(root, memo, SETTLE_NS)
    assert final.hashed_files == 1 and final.fingerprint == scan(root).fingerprint != after.fingerprint


def test_files_changed_within_the_settle_window_are_not_memoized(tmp_path):
    """A file changed in the same timestamp tick as the hash could keep its ctime: it is read again."""
    root = write_folder(tmp_path / "data", FILES)
    memo = tmp_path / MEMO_FILE
    scan(root, memo)  # the default window (2 s): everything was written just now
    assert scan(root, memo).hashed_files == 4


def test_an_unusable_memo_only_costs_time(tmp_path, caplog):
    root = write_folder(tmp_path / "data", FILES)
    memo = tmp_path / MEMO_FILE
    memo.write_bytes(b"not an sqlite database" * 100)
    with caplog.at_level(logging.WARNING, logger="deit_core.teacher_cache.fingerprint"):
        result = scan(root, memo, SETTLE_NS)
    assert result.fingerprint == scan(root).fingerprint and result.hashed_files == 4
    assert "memo" in caplog.text and "hashing every file" in caplog.text


def test_concurrent_scans_share_one_memo(tmp_path, caplog):
    """Every rank of a run (and every run) scans at once on the first job: none may fall back or corrupt the memo."""
    from concurrent.futures import ThreadPoolExecutor

    many = {f"train/{i % 7}/{i:04d}.png": bytes([i % 251]) * (i + 1) for i in range(300)}
    root = settled(write_folder(tmp_path / "data", many))
    memo = tmp_path / MEMO_FILE
    with caplog.at_level(logging.WARNING, logger="deit_core.teacher_cache.fingerprint"):
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda _: scan(root, memo, SETTLE_NS), range(4)))
    assert not caplog.records
    assert {r.fingerprint for r in results} == {scan(root).fingerprint}
    assert scan(root, memo, SETTLE_NS).hashed_files == 0
