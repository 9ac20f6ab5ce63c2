"""V1: attempt 2 resuming from a checkpoint that has done every epoch (attempt 1 trained to the end,
then its worker died while exporting) trains 0 steps. It used to end with no epoch event, so the job
succeeded with ``top1: null`` and no metric series. Now the restored weights -- the ones ``final/``
and the export hold -- are evaluated and recorded as the last epoch's metrics (tiny real training)."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from deit_core.config import parse_config
from worker.retention import carry_over_checkpoint
from worker.tail import RunProgress

from .conftest import events, job_config

pytestmark = [pytest.mark.slow]


def train(run_dir: Path, *args: str) -> None:
    r = subprocess.run([sys.executable, "-m", "deit_core.train", "--config", str(run_dir / "job.json"),
                        "--output", str(run_dir), *args], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]


def test_a_resume_with_no_epoch_left_records_the_final_metrics_of_its_weights(digits, tmp_path):
    config = parse_config(job_config(digits, epochs=1)).to_dict()
    first, second = tmp_path / "attempt-1", tmp_path / "attempt-2"
    for run_dir in (first, second):  # what worker.runner writes before it starts a run
        run_dir.mkdir()
        (run_dir / "job.json").write_text(json.dumps(config))
    train(first)
    (trained,) = events(first, "epoch")

    assert carry_over_checkpoint(tmp_path, 2, second, config, logging.getLogger("test"))
    train(second, "--resume")

    (start,) = events(second, "start")
    assert start["resumed"] and start["start_epoch"] == 1 == start["epochs"]
    assert events(second, "step") == []  # nothing left to train
    (epoch,) = events(second, "epoch")
    assert epoch["evaluated_on_resume"] and (epoch["epoch"], epoch["epochs"]) == (1, 1)
    assert epoch["val_top1"] == pytest.approx(trained["val_top1"], abs=1e-6)  # the same weights, evaluated again
    assert epoch["loss"] == pytest.approx(trained["loss"])  # the train stats the checkpoint saved for its epoch
    (done,) = events(second, "done")
    assert done["val_top1"] == epoch["val_top1"]
    final = json.loads((second / "final" / "config.json").read_text())
    assert final["metrics"]["val_top1"] == epoch["val_top1"]

    progress = RunProgress()  # what the worker writes on the job row and as its metric series
    points = progress.apply(json.loads(line) for line in (second / "metrics.jsonl").read_text().splitlines())
    assert progress.metrics["val_top1"] == epoch["val_top1"] and progress.progress["fraction"] == 1.0
    assert {"val_top1", "loss"} <= {p["name"] for p in points}
