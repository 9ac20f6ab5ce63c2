"""Fast checks of the Slurm launcher's pieces and of multi-node resources, without a cluster:
the sbatch script, Slurm's states in words, and the config and submission validation."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from deit_core.config import ConfigError, parse_config
from server.settings import Settings
from server.submissions import SubmissionError, check_limits
from tests.helpers import TINY_RECIPE, job_config
from worker import slurm


def test_sbatch_script_places_one_torchrun_per_node_with_the_settings(tmp_path):
    settings = Settings().replace(slurm_partition="gpu", slurm_account="vision", slurm_time_limit="02:00:00",
                                  slurm_gpus_per_node=4, slurm_sbatch_args=("--exclusive", "--mem=0"))
    run = tmp_path / "runs" / "7" / "attempt-2"
    args = ["--config", f"{run}/job.json", "--output", str(run), "--resume"]
    text = slurm.sbatch_script(settings, 7, 2, run, nodes=3, per_node=4, train_args=args,
                               python="/opt/venv/bin/python", workdir=Path("/srv/distillery"))
    lines = text.splitlines()
    sbatch = [ln.removeprefix("#SBATCH ") for ln in lines if ln.startswith("#SBATCH ")]
    assert sbatch == ["--nodes=3", "--ntasks-per-node=1", "--job-name=distillery-7-a2", f"--output={run}/output.log",
                      "--open-mode=append", "--chdir=/srv/distillery", "--partition=gpu", "--account=vision",
                      "--time=02:00:00", "--gpus-per-node=4", "--exclusive", "--mem=0"]
    srun = next(ln for ln in lines if ln.startswith("srun "))
    assert srun.startswith("srun --kill-on-bad-exit=1 --nodes=3 --ntasks-per-node=1 "
                           "/opt/venv/bin/python -m torch.distributed.run ")
    for part in ("--nnodes 3", "--nproc_per_node 4", "--rdzv-backend c10d", '--rdzv-endpoint "$MASTER_ADDR:$MASTER_PORT"',
                 "--rdzv-id 7-2", f"-m deit_core.train --config {run}/job.json --output {run} --resume"):
        assert part in srun, part
    assert 'scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1' in text
    assert "MASTER_PORT=$(( 29500 + SLURM_JOB_ID % 20000 ))" in text
    assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0  # valid shell


def test_sbatch_script_leaves_out_what_is_not_set(tmp_path):
    text = slurm.sbatch_script(Settings(), 1, 1, tmp_path, nodes=1, per_node=1, train_args=[])
    assert not any(opt in text for opt in ("--partition", "--account", "--time", "--gpus-per-node"))
    assert slurm.rdzv_port("123") == slurm.RDZV_PORT_BASE + 123


@pytest.mark.parametrize("state, words", [("TIMEOUT", "hit its time limit"), ("PREEMPTED", "was preempted"),
                                          ("NODE_FAIL", "lost a node"), ("FAILED", "failed")])
def test_slurm_endings_say_what_happened(state, words):
    reason = slurm.describe_end("42", slurm.SlurmState(state, "NonZeroExitCode", 1, 0))
    assert reason.startswith(f"Slurm job 42 {words}") and f"state {state}" in reason
    assert slurm.describe_end("42", slurm.SlurmState("COMPLETED")) is None
    assert not slurm.SlurmState(state).alive and slurm.SlurmState("COMPLETING").alive


def _resources(**resources) -> dict:
    cfg = job_config("teacher", "/data", TINY_RECIPE)
    cfg["resources"] = resources
    return cfg


def test_nodes_and_processes_per_node_spell_the_world_size():
    r = parse_config(_resources(nodes=2, processes_per_node=3), check_paths=False).resources
    assert (r.nodes, r.processes, r.processes_per_node, r.world_size) == (2, 3, 3, 6)
    r = parse_config(_resources(processes=2), check_paths=False).resources  # the one-node spelling
    assert (r.nodes, r.processes_per_node, r.world_size) == (1, 2, 2)
    assert parse_config(_resources(processes=2, processes_per_node=2), check_paths=False).resources.world_size == 2


@pytest.mark.parametrize("resources, field", [({"processes": 2, "processes_per_node": 4}, "resources.processes_per_node"),
                                              ({"nodes": 0}, "resources.nodes"),
                                              ({"processes_per_node": 0}, "resources.processes_per_node")])
def test_contradicting_or_impossible_resources_name_the_field(resources, field):
    with pytest.raises(ConfigError) as e:
        parse_config(_resources(**resources), check_paths=False)
    assert e.value.field == field


def test_more_nodes_than_the_deployment_places_is_refused_naming_the_field():
    cfg = parse_config(_resources(nodes=2, processes_per_node=1), check_paths=False).to_dict()
    with pytest.raises(SubmissionError) as e:
        check_limits(Settings(), cfg, "config.")
    assert e.value.status == 400 and e.value.field == "config.resources.nodes"
    assert "at most 1 node(s) per job (DISTILLERY_MAX_NODES)" in e.value.message and "Slurm launcher" in e.value.message
    check_limits(Settings().replace(max_nodes=2), cfg, "config.")  # a Slurm deployment takes it
