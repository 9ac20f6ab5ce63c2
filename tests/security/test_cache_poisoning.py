"""Teacher-cache poisoning across users, reproduced at the cache lookup every run makes (open_feed).

The attack as measured: a user uploads a copy of the shared data with the same paths, sizes and
mtimes (a tar keeps mtimes) but blank images, and fills a teacher-output cache from it. Another
user's student on the real data then found that cache as a ``hit`` (the key's data fingerprints were
path + size + mtime) and trained against the blank images' near-constant logits. With the
fingerprint over the files' bytes the blank copy's cache is a miss that names the data fields; an
honest copy of the same bytes still shares the cache.
"""
from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from deit_core.config import parse_config
from deit_core.teacher_cache.feed import CacheOptions, Layout, open_feed
from deit_core.teacher_cache.manifest import CacheStatus
from tests.conftest import distill_config

LAYOUT = Layout(epochs=1, start_epoch=0, world=1, rank=0, steps=1, batch_size=4, num_classes=10, val_rows=4,
                device_type="cpu", precision="no")


def blank_copy(real: Path, dest: Path) -> Path:
    """Every image of ``real`` as an all-black image of its size, padded to its byte size (PNG readers
    stop at IEND), with its mtime: what the old fingerprint saw is identical."""
    for src in sorted(p for p in real.rglob("*") if p.is_file()):
        out = dest / src.relative_to(real)
        out.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(src) as im:
            buf = io.BytesIO()
            Image.new(im.mode, im.size).save(buf, format="PNG")
        data = buf.getvalue()
        assert len(data) <= src.stat().st_size
        out.write_bytes(data + bytes(src.stat().st_size - len(data)))
        os.utime(out, ns=(src.stat().st_atime_ns, src.stat().st_mtime_ns))
    return dest


def config(data: Path, teacher_cache: str = "auto"):
    cfg = distill_config(data, "timm", "hard", epochs=1)
    cfg["distillation"]["teacher_cache"] = teacher_cache
    return parse_config(cfg, check_paths=False)


def publish_cache(data: Path, store: Path, run: Path) -> str:
    """Fill and publish a (one-step) cache from ``data`` the way a teacher_outputs run does; returns its name."""
    events: list[dict] = []
    feed = open_feed(config(data), CacheOptions(store), LAYOUT, lambda images: images, lambda e, **kw: events.append(kw),
                     run, torch.device("cpu"), require_write=True)
    logits = torch.zeros(4, 10)  # what a teacher says about black images: the same for every row
    feed.writer.record(torch.tensor([0, 1, 2, 3]), logits, logits.argmax(dim=1))
    feed.writer.end_epoch(0, torch.tensor([[0, 0], [1, 0], [2, 0], [3, 0]], dtype=torch.int32))
    feed.writer.record_val(torch.zeros(4, dtype=torch.int32), 0.1)
    status, manifest = feed.writer.publish()
    assert status == CacheStatus.WRITTEN
    return manifest.name


def lookup(data: Path, store: Path, run: Path, teacher_cache: str = "auto") -> list[dict]:
    """The ``teacher_cache`` events of a student on ``data`` deciding whether to read from ``store``
    (``auto``: any cache whose key matches; a folder: that cache, as the worker resolves a named one)."""
    events: list[dict] = []
    open_feed(config(data, teacher_cache), CacheOptions(store), LAYOUT, lambda images: images, lambda e, **kw: events.append(kw),
              run, torch.device("cpu"))
    return events


@pytest.fixture
def blank(small_digits, tmp_path) -> Path:
    root = blank_copy(small_digits, tmp_path / "uploads" / "mallory" / "digits")
    same = [(p.relative_to(root), p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()]
    real = [(p.relative_to(small_digits), p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(small_digits.rglob("*")) if p.is_file()]
    assert same == real and len(real) > 100
    with Image.open(next(root.rglob("*.png"))) as im:
        assert im.getextrema() in ((0, 0), ((0, 0),) * len(im.getbands()))  # really blank
    return root


def test_a_cache_filled_from_a_forged_blank_copy_is_no_hit_for_the_real_data(small_digits, blank, tmp_path):
    store = tmp_path / "storage" / "teacher_cache"
    name = publish_cache(blank, store, tmp_path / "mallory-run")
    events = lookup(small_digits, store, tmp_path / "alice-run")
    assert [e["status"] for e in events] == [CacheStatus.MISS, CacheStatus.WRITING], events
    # named outright (distillation.teacher_cache: its name, which the worker resolves to the folder)
    events = lookup(small_digits, store, tmp_path / "alice-run-2", str(store / name))
    assert [e["status"] for e in events] == [CacheStatus.MISS], events
    assert events[0]["reason"].endswith("its key differs in data.train, data.val"), events


def test_a_cache_filled_from_a_true_copy_is_a_hit(small_digits, tmp_path):
    """The same bytes under another user's folder, with other mtimes, are the same data: one cache serves both."""
    copy = tmp_path / "uploads" / "bob" / "digits"
    shutil.copytree(small_digits, copy, copy_function=shutil.copyfile)  # new mtimes
    store = tmp_path / "storage" / "teacher_cache"
    name = publish_cache(copy, store, tmp_path / "bob-run")
    events = lookup(small_digits, store, tmp_path / "alice-run")
    assert [(e["status"], e["name"]) for e in events] == [(CacheStatus.HIT, name)], events
