"""Fast checks of the worker's pieces: metrics tailing, progress, process-tree stop, archives."""
from __future__ import annotations

import io
import json
import sys
import tarfile
import zipfile

import psutil
import pytest

from server.archives import ArchiveRefused, _extract_tar_members, unpack_dataset
from tests.helpers import wait_until
from tests.service.test_validation import make_tgz
from worker import launch
from worker.tail import MetricsTail, RunProgress


def test_tail_reads_only_whole_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    tail = MetricsTail(path)
    assert tail.read_new() == []
    with open(path, "w") as f:
        f.write(json.dumps({"event": "start", "time": 1}) + "\n" + '{"event": "st')
    assert [e["event"] for e in tail.read_new()] == ["start"]
    with open(path, "a") as f:
        f.write('ep", "time": 2, "epoch": 1, "epochs": 2, "step": 5, "steps_per_epoch": 10, "loss": 2.0, "eta_s": 9}\n')
    events = tail.read_new()
    assert events[0]["event"] == "step"
    run = RunProgress()
    points = run.apply(events)
    assert run.progress["fraction"] == 0.25 and run.progress["eta_s"] == 9 and run.metrics["loss"] == 2.0
    assert points == [{"name": "loss", "epoch": 1, "step": 5, "value": 2.0, "time": 2}]
    run.apply([{"event": "epoch", "time": 3, "epoch": 2, "epochs": 2, "step": 10, "steps_per_epoch": 10,
                "val_top1": 91.0}, {"event": "error", "time": 4, "message": "boom"}])
    assert run.progress["fraction"] == 1.0 and run.metrics["val_top1"] == 91.0 and run.error == "boom"


STUBBORN = """
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
if len(sys.argv) == 1:
    for _ in range(2):  # children in their own sessions, like torchrun's ranks
        subprocess.Popen([sys.executable, __file__, "child"], start_new_session=True)
while True:
    time.sleep(1)
"""


def test_stop_kills_the_whole_tree_even_if_sigterm_is_ignored(tmp_path):
    script = tmp_path / "stubborn.py"
    script.write_text(STUBBORN)
    proc = launch.start([sys.executable, str(script)], tmp_path / "out.log", env={}, cwd=tmp_path)
    wait_until(lambda: len(psutil.Process(proc.pid).children(recursive=True)) >= 2, 30, "the two children", 0.1)
    tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    launch.stop(proc, grace_s=1)
    _, alive = psutil.wait_procs(tree, timeout=5)
    assert not alive


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for k, v in members.items():
            zf.writestr(k, v)
    return buf.getvalue()


def test_archive_limits_and_atomicity(tmp_path):
    from PIL import Image

    img = io.BytesIO()
    Image.new("RGB", (4, 4)).save(img, format="PNG")
    members = {f"ds/{s}/{c}/{i}.png": img.getvalue() for s in ("train", "val") for c in "ab" for i in range(3)}
    archive = tmp_path / "a.zip"
    archive.write_bytes(_zip(members))
    with pytest.raises(ArchiveRefused, match="more than 5 members"):
        unpack_dataset(archive, tmp_path / "out" / "x", max_files=5, max_bytes=1 << 30)
    with pytest.raises(ArchiveRefused, match="bytes"):
        unpack_dataset(archive, tmp_path / "out" / "x", max_files=100, max_bytes=10)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    counts = unpack_dataset(archive, tmp_path / "out" / "x", max_files=100, max_bytes=1 << 30)
    assert counts == {"num_classes": 2, "num_train": 6, "num_val": 6}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["x"]
    assert (tmp_path / "out" / "x" / "train" / "a" / "0.png").is_file()


def test_tar_upload_on_a_python_without_extraction_filters(tmp_path, monkeypatch):
    """Debian bookworm's Python 3.11.2 (the stand-in container's) has no tarfile.data_filter and its
    extractall takes no ``filter``: every .tar.gz upload was a 500 there (found by tests/deploy)."""
    from PIL import Image

    img = io.BytesIO()
    Image.new("RGB", (4, 4)).save(img, format="PNG")
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(make_tgz({f"{s}/{c}/{i}.png": img.getvalue() for s in ("train", "val") for c in "ab" for i in range(2)}))
    original = tarfile.TarFile.extractall

    def extractall_before_pep706(self, path=".", members=None, *, numeric_owner=False):
        return original(self, path, members, numeric_owner=numeric_owner)

    monkeypatch.delattr(tarfile, "data_filter")
    monkeypatch.setattr(tarfile.TarFile, "extractall", extractall_before_pep706)
    counts = unpack_dataset(archive, tmp_path / "out" / "x", max_files=100, max_bytes=1 << 30)
    assert counts == {"num_classes": 2, "num_train": 4, "num_val": 4}
    assert (tmp_path / "out" / "x" / "val" / "b" / "1.png").read_bytes() == img.getvalue()


@pytest.mark.parametrize("members, symlink, why", [
    ({"../escape.png": b"x"}, None, "escapes"),
    ({"train/a/0.png": b"x"}, "train/a/link.png", "link or special file"),  # -> /etc/passwd
])
def test_tar_members_without_filters_refuse_escapes_and_links(tmp_path, members, symlink, why):
    """The filterless extraction re-checks what ``_members`` already refused."""
    (tmp_path / "a.tar.gz").write_bytes(make_tgz(members, symlink))
    (tmp_path / "dest").mkdir()
    with tarfile.open(tmp_path / "a.tar.gz") as tf, pytest.raises(ArchiveRefused, match=why):
        _extract_tar_members(tf, tmp_path / "dest")
    assert not (tmp_path / "escape.png").exists() and not (tmp_path / "dest" / "train" / "a" / "link.png").exists()


def test_a_run_starts_under_a_worker_that_is_pid_1(tmp_path):
    """In a container ``distillery worker`` is pid 1; its runs' children must not take their
    parent's pid 1 for "the worker died" (every containerised run exited 1 with no output)."""
    import shutil
    import subprocess

    if not sys.platform.startswith("linux") or not shutil.which("unshare"):
        pytest.skip("needs Linux and unshare (a new pid namespace)")
    script = ("import sys; from pathlib import Path; from worker import launch; import os; assert os.getpid() == 1; "
              f"p = launch.start([sys.executable, '-c', 'print(42)'], Path({str(tmp_path / 'out.log')!r}), dict(os.environ), "
              "Path('.')); sys.exit(p.wait())")
    for ns in (["--pid", "--fork"], ["--user", "--map-root-user", "--pid", "--fork"]):
        probe = subprocess.run(["unshare", *ns, "true"], capture_output=True)
        if probe.returncode == 0:
            break
    else:
        pytest.skip(f"no new pid namespace here: {probe.stderr.decode().strip()}")
    done = subprocess.run(["unshare", *ns, sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, (done.stderr, (tmp_path / "out.log").read_text())
    assert (tmp_path / "out.log").read_text().splitlines()[-1] == "42"
