"""Storage faults: a full disk while writing a checkpoint or an upload, a corrupt checkpoint,
dataset folder permissions.

A small tmpfs stands in for a full volume (root is needed to mount one; outside CI the tests skip
with the reason if ``mount`` fails, under ``CI=true`` they fail instead).
"""
from __future__ import annotations

import io
import json
import os
import random
import stat
import subprocess
import zipfile
from pathlib import Path

import pytest
import requests
import torch

from deit_core.checkpoint import LAST, PREV, latest_valid, load_checkpoint, save_checkpoint
from deit_core.files import StorageError
from tests.helpers import wait_for_job, wait_until
from tests.service.conftest import teacher_config, unavailable
from tests.service.test_embedded import embedded_service

MiB = 1 << 20


def mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True)
    if r.returncode != 0:
        unavailable(f"cannot mount a tmpfs (needs root): {r.stderr.strip()}")


def resize_tmpfs(path: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True, capture_output=True)


def umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def small_disk(tmp_path):
    """An 8 MiB tmpfs at tmp_path/disk."""
    disk = tmp_path / "disk"
    mount_tmpfs(disk, "8m")
    yield disk
    umount(disk)


def leftovers(root: Path) -> list[str]:
    """Temp and partial files a failed write must not leave behind."""
    return [str(p) for p in root.rglob("*") if ".tmp" in p.name or p.name.endswith(".part")]


def state(fill: float, mib: int = 3) -> dict:
    return {"weights": torch.full((mib * MiB // 4,), fill), "epoch": int(fill)}


def test_full_disk_checkpoint_is_a_plain_error_and_the_previous_one_stays(small_disk):
    ckpt = small_disk / "checkpoints"
    save_checkpoint(ckpt, state(1.0), is_best=True)  # 3 MiB, best.pt shares it (hard link)
    with pytest.raises(StorageError) as e:
        save_checkpoint(ckpt, state(2.0, mib=6), is_best=False)  # 3 + 6 > 8 MiB
    assert str(e.value) == "no space left on device writing checkpoints/last.pt"
    assert leftovers(small_disk) == []
    assert latest_valid(ckpt) == ckpt / LAST
    assert load_checkpoint(ckpt / LAST)["epoch"] == 1


def test_unwritable_checkpoint_dir_is_a_plain_error(small_disk):
    """A volume gone read-only (as root, file modes are not enforced, so this is the permission
    error a test can cause) fails with the reason, and the previous checkpoint stays."""
    ckpt = small_disk / "checkpoints"
    save_checkpoint(ckpt, state(1.0, mib=1), is_best=False)
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True, capture_output=True)
    with pytest.raises(StorageError, match="^read-only file system writing checkpoints/last.pt$"):
        save_checkpoint(ckpt, state(2.0, mib=1), is_best=False)
    assert leftovers(small_disk) == [] and load_checkpoint(latest_valid(ckpt))["epoch"] == 1


def test_corrupt_last_checkpoint_falls_back_to_the_previous_one(tmp_path):
    """last.pt is checked against its sha256 sidecar; a corrupt one falls back to last.prev.pt."""
    ckpt = tmp_path / "checkpoints"
    for epoch in (1, 2):
        save_checkpoint(ckpt, state(float(epoch), mib=1), is_best=False)
    assert sorted(p.name for p in ckpt.iterdir()) == [PREV, PREV + ".sha256", LAST, LAST + ".sha256"]
    assert latest_valid(ckpt) == ckpt / LAST
    with open(ckpt / LAST, "r+b") as f:  # flip bytes in the middle: still a zip, wrong content
        f.seek(MiB // 2)
        f.write(b"\xff" * 64)
    assert latest_valid(ckpt) == ckpt / PREV
    assert load_checkpoint(latest_valid(ckpt))["epoch"] == 1
    (ckpt / LAST).write_bytes(b"")  # truncated to nothing
    assert latest_valid(ckpt) == ckpt / PREV
    (ckpt / PREV).write_bytes(b"junk")
    assert latest_valid(ckpt) is None


def test_old_attempts_run_dirs_are_pruned_and_artifacts_stay(tmp_path):
    """Only the newest ``keep`` attempt directories stay; an artifact registered from a pruned
    attempt (a hard link in storage/artifacts, as worker.runner registers them) still reads."""
    from server.storage import link_or_copy
    from worker.retention import prune_attempts

    runs = tmp_path / "runs" / "7"
    for n in range(1, 6):
        (runs / f"attempt-{n}" / "final").mkdir(parents=True)
        (runs / f"attempt-{n}" / "final" / "model.safetensors").write_bytes(b"weights %d" % n)
    (runs / "notes.txt").write_text("not an attempt")
    artifact = tmp_path / "artifacts" / "7" / "attempt-2" / "checkpoint" / "model.safetensors"
    link_or_copy(runs / "attempt-2" / "final" / "model.safetensors", artifact)
    removed = prune_attempts(runs, current=5, keep=2)
    assert sorted(p.name for p in removed) == ["attempt-1", "attempt-2", "attempt-3"]
    assert sorted(p.name for p in runs.iterdir()) == ["attempt-4", "attempt-5", "notes.txt"]
    assert artifact.read_bytes() == b"weights 2"


def random_png_zip(path: Path, images: int, px: int = 64) -> Path:
    """A .zip ImageFolder of incompressible images (~12 KiB each at 64 px)."""
    from PIL import Image

    rng = random.Random(0)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for i in range(images):
            split, cls = ("train" if i % 5 else "val"), f"c{i % 2}"
            buf = io.BytesIO()
            Image.frombytes("RGB", (px, px), rng.randbytes(px * px * 3)).save(buf, "PNG")
            zf.writestr(f"{split}/{cls}/{i}.png", buf.getvalue())
    return path


@pytest.mark.integration  # starts the service (`distillery up`: gunicorn and a Celery worker)
def test_upload_to_a_full_disk_and_dataset_permissions(tmp_path):
    """An upload that does not fit answers 507 with a JSON reason and leaves no folder behind; one
    that fits is published with 0755 folders and 0644 files (not mkdtemp's 0700)."""
    datasets = tmp_path / "var" / "storage" / "datasets"
    mount_tmpfs(datasets, "8m")
    try:
        with embedded_service(tmp_path, per_class=(4, 1)) as (url, h, _):
            big = random_png_zip(tmp_path / "big.zip", 450)  # ~5.5 MiB: the archive + its unpacked copy do not fit
            with open(big, "rb") as f:
                r = requests.post(f"{url}/datasets", data={"name": "big"}, files={"file": ("big.zip", f)}, headers=h)
            assert r.status_code == 507, r.text
            err = r.json()["error"]
            assert err["code"] == "insufficient_storage" and err["field"] == "file", err
            assert "no space left on device writing datasets/big" in err["message"], err
            assert list(datasets.iterdir()) == [], list(datasets.iterdir())

            small = random_png_zip(tmp_path / "small.zip", 20)
            with open(small, "rb") as f:
                r = requests.post(f"{url}/datasets", data={"name": "small"}, files={"file": ("small.zip", f)}, headers=h)
            assert r.status_code == 201, r.text
            (root,) = list(datasets.iterdir())  # the API shows a non-admin "dataset:small", not the folder
            modes = {stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")] if p.is_dir()}
            assert modes == {0o755}, [oct(m) for m in modes]
            modes = {stat.S_IMODE(p.stat().st_mode) for p in root.rglob("*") if p.is_file()}
            assert modes == {0o644}, [oct(m) for m in modes]
    finally:
        umount(datasets)


@pytest.mark.slow
def test_full_disk_during_training_fails_the_job_plainly_and_the_retry_resumes(tmp_path):
    """The job's run directory is on a tmpfs shrunk to what the first checkpoint left free: the next
    checkpoint cannot be written. The job fails with a plain reason, no temp file is left, the
    first checkpoint still loads; with space again, a retry resumes from it (at epoch 2 of 2)."""
    job_runs = tmp_path / "var" / "storage" / "runs" / "1"  # the first job of a fresh `up`
    mount_tmpfs(job_runs, "512m")
    try:
        with embedded_service(tmp_path, per_class=(10, 2), DISTILLERY_POLL_S="0.3") as (url, h, up):
            cfg = teacher_config("dataset:digits", epochs=2)
            cfg["resources"] = {"processes": 1, "max_attempts": 1}
            r = requests.post(f"{url}/jobs", json={"kind": "teacher", "name": "full-disk", "config": cfg}, headers=h)
            assert r.status_code == 201 and r.json()["id"] == 1, r.text
            ckpt = job_runs / "attempt-1" / "checkpoints"
            wait_until((ckpt / "best.pt.sha256").exists, 240, "the first checkpoint")
            vfs = os.statvfs(job_runs)
            used = (vfs.f_blocks - vfs.f_bfree) * vfs.f_frsize
            resize_tmpfs(job_runs, str(used + MiB))

            def get(i: int) -> dict:
                return requests.get(f"{url}/jobs/{i}", headers=h).json()

            job = wait_for_job(get, 1, states=("failed",), timeout=240,
                               describe=lambda: (tmp_path / "up.log").read_text()[-3000:])
            assert "no space left on device writing checkpoints/last.pt" in job["error"], job["error"]
            assert leftovers(job_runs) == []
            assert latest_valid(ckpt) == ckpt / LAST and load_checkpoint(ckpt / LAST)["epoch"] == 1

            resize_tmpfs(job_runs, "512m")
            assert requests.post(f"{url}/jobs/1/retry", headers=h).status_code == 202
            metrics = job_runs / "attempt-2" / "metrics.jsonl"
            wait_until(lambda: metrics.exists() and '"start"' in metrics.read_text(), 180, "attempt 2 to start",
                       describe=lambda: (tmp_path / "up.log").read_text()[-3000:])
            start = next(e for e in map(json.loads, metrics.read_text().splitlines()) if e["event"] == "start")
            assert start["event"] == "start" and start["resumed"] and start["start_epoch"] == 1, start
            assert requests.post(f"{url}/jobs/1/cancel", headers=h).status_code == 202  # resuming is the point
            wait_for_job(get, 1, states=("cancelled",), timeout=60)
    finally:
        umount(job_runs)
