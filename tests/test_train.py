"""Real training runs: entry point outputs, 2-process torchrun, resume, refusals."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import PY, ROOT, distill_config, run_cli


def events(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def write(path: Path, cfg: dict) -> Path:
    path.write_text(json.dumps(cfg))
    return path


def test_teacher_run_writes_the_design_layout(trained_teacher):
    run = trained_teacher
    for rel in ("metrics.jsonl", "train.log", "checkpoints/last.pt", "checkpoints/best.pt",
                "final/model.safetensors", "final/config.json"):
        assert (run / rel).is_file(), rel
    ev = events(run)
    assert [e["event"] for e in ev][0] == "start" and ev[-1]["event"] == "done"
    assert all("event" in e and "time" in e for e in ev)
    step = next(e for e in ev if e["event"] == "step")
    for key in ("epoch", "epochs", "step", "steps_per_epoch", "loss", "lr", "img_per_s", "eta_s"):
        assert key in step
    epoch = next(e for e in ev if e["event"] == "epoch")
    assert {"val_top1", "val_top5", "val_top1_ema"} <= epoch.keys()
    meta = json.loads((run / "final/config.json").read_text())
    assert meta["architecture"] == "regnety_002" and meta["classes"] == [str(i) for i in range(10)]
    assert meta["img_size"] == 32 and len(meta["mean"]) == 3
    ckpt = torch.load(run / "checkpoints/last.pt", weights_only=True)
    assert ckpt["epoch"] == 1 and {"model", "optimizer", "scheduler", "rng"} <= ckpt.keys()


def test_two_process_torchrun_distillation(trained_teacher, small_digits, tmp_path):
    cfg = write(tmp_path / "d.json", distill_config(small_digits, str(trained_teacher / "final"), "hard", epochs=1))
    out = tmp_path / "run"
    r = subprocess.run([PY, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "deit_core.train", "--config", str(cfg), "--output", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "final", "metrics.jsonl", "train.log"]
    ev = events(out)
    assert [e["event"] for e in ev].count("start") == 1  # rank 0 alone writes
    start = ev[0]
    assert start["processes"] == 2
    done = ev[-1]
    assert done["event"] == "done"
    sums = done["rank_weight_checksums"]
    assert len(sums) == 2 and sums[0] == sums[1], "ranks ended with different weights"
    assert {"teacher_top1", "val_agreement", "val_top1_cls", "val_top1_dist"} <= done.keys()
    assert (out / "checkpoints/last.pt").is_file()
    assert load_file(str(out / "final/model.safetensors"))["dist_token"].shape[-1] == 192


def test_resume_after_kill_matches_uninterrupted_run(trained_teacher, small_digits, tmp_path):
    cfg = write(tmp_path / "d.json", distill_config(small_digits, str(trained_teacher / "final"), "soft", epochs=3,
                                                      accum_steps=2, clip_grad=1.0, batch_size=8))
    straight = tmp_path / "straight"
    r = run_cli("-m", "deit_core.train", "--config", str(cfg), "--output", str(straight))
    assert r.returncode == 0, r.stderr[-3000:]

    killed = tmp_path / "killed"
    proc = subprocess.Popen([PY, "-m", "deit_core.train", "--config", str(cfg), "--output", str(killed)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 300
    while time.time() < deadline:
        if (killed / "metrics.jsonl").exists() and any(e["event"] == "checkpoint" for e in events(killed)):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "final").exists(), "the run finished before it could be killed"
    assert torch.load(killed / "checkpoints/last.pt", weights_only=True)["epoch"] == 1

    r = run_cli("-m", "deit_core.train", "--config", str(cfg), "--output", str(killed), "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    starts = [e for e in events(killed) if e["event"] == "start"]
    assert starts[-1]["resumed"] and starts[-1]["start_epoch"] == 1
    resumed_epochs = [e["epoch"] for e in events(killed)[events(killed).index(starts[-1]):] if e["event"] == "epoch"]
    assert resumed_epochs == [2, 3]
    a, b = load_file(str(straight / "final/model.safetensors")), load_file(str(killed / "final/model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=f"{k} differs after resume")


@pytest.mark.parametrize("override, field", [
    ({"train": {"batch_size": 0}}, "train.batch_size"),
    ({"distillation": {"type": "hard", "alpha": 1.5}}, "distillation.alpha"),
    ({"data": {"img_size": 36}}, "data.img_size"),
    ({"train": {"epochs": 1, "warmup": 3}}, "train.warmup"),
])
def test_bad_config_exits_nonzero_naming_the_field(small_digits, tmp_path, override, field):
    cfg = distill_config(small_digits, None, "none")
    for section, values in override.items():
        cfg[section] = {**cfg[section], **values}
    path = write(tmp_path / "bad.json", cfg)
    r = run_cli("-m", "distillery", "train", "--config", str(path), "--output", str(tmp_path / "run"))
    assert r.returncode == 2
    assert field in r.stderr
    err = events(tmp_path / "run")[-1]
    assert err["event"] == "error" and err["field"] == field


def test_teacher_with_other_class_count_is_refused_before_training(small_digits, tmp_path):
    import timm
    from safetensors.torch import save_file

    five = timm.create_model("regnety_002", num_classes=5)
    save_file({k: v.contiguous() for k, v in five.state_dict().items()}, str(tmp_path / "teacher5.safetensors"))
    path = write(tmp_path / "d.json", distill_config(small_digits, str(tmp_path / "teacher5.safetensors")))
    r = run_cli("-m", "deit_core.train", "--config", str(path), "--output", str(tmp_path / "run"))
    assert r.returncode == 2, r.stderr[-2000:]
    assert "teacher.checkpoint" in r.stderr and "5 classes" in r.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()
    assert [e["event"] for e in events(tmp_path / "run")] == ["error"]
