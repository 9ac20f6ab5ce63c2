"""The Slurm launcher on a real two-node Slurm cluster, through the REST API.

Every job here is submitted with ``resources: {nodes: 2, processes_per_node: 1}`` to a worker
started with ``DISTILLERY_LAUNCHER=slurm``: it becomes one Slurm batch job whose ``srun`` starts
one torchrun on n1 and one on n2, joined by c10d rendezvous (gloo on CPU).
"""
from __future__ import annotations

import json
import signal

import psutil
import pytest

from tests.conftest import distill_config
from tests.helpers import wait_until

from .conftest import stop, teacher_job

pytestmark = [pytest.mark.slow]


def events(run_dir, kind: str) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [e for e in map(json.loads, filter(None, lines)) if e.get("event") == kind]


def training_processes(needle: str = "") -> list[psutil.Process]:
    """Live ``deit_core.train`` processes (torchrun agents and ranks) whose command line has ``needle``."""
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            if p.info["status"] != psutil.STATUS_ZOMBIE and "deit_core.train" in cmd and needle in cmd:
                found.append(p)
        except psutil.Error:
            pass
    return found


def ranks_on(node: str, run_dir) -> list[psutil.Process]:
    """The rank processes (not the torchrun agent) that Slurm started on ``node`` for ``run_dir``."""
    out = []
    for p in training_processes(str(run_dir)):
        try:
            if "torch.distributed.run" not in " ".join(p.cmdline()) and p.environ().get("SLURMD_NODENAME") == node:
                out.append(p)
        except psutil.Error:
            pass
    return out


def wait_training(svc, job_id: int) -> dict:
    """Until the job has taken training steps; returns the job."""
    return wait_until(lambda: (j := svc.job(job_id))["progress"].get("step") and j["launcher"]["job_id"] and j, 120,
                      f"job {job_id} to train", describe=svc.logs)


def slurm_jobs_named(cluster, job_id: int) -> list[str]:
    """Slurm job ids of every attempt of ``job_id`` that slurmctld remembers (MinJobAge=600)."""
    r = cluster.run("scontrol", "show", "job", "-o")
    return [line.split()[0].split("=")[1] for line in r.stdout.splitlines()
            if f"JobName=distillery-{job_id}-a" in line]


def test_two_node_distill_job_succeeds_with_equal_rank_weights(slurm_service, small_digits, trained_teacher):
    svc = slurm_service
    cfg = distill_config(small_digits, str(trained_teacher / "final"))
    cfg["resources"] = {"nodes": 2, "processes_per_node": 1}
    job_id = svc.submit("two-node distill", cfg)
    job = svc.wait(job_id, timeout=240)

    slurm_id = job["launcher"]["job_id"]
    assert job["launcher"]["kind"] == "slurm" and slurm_id
    assert slurm_jobs_named(svc.cluster, job_id) == [slurm_id]
    info = svc.cluster.run("scontrol", "show", "job", "-o", slurm_id).stdout
    assert "NumNodes=2" in info and "JobState=COMPLETED" in info, info
    ptl = [a for a in job["artifacts"] if a["format"] == "ptl"]
    assert len(ptl) == 1 and ptl[0]["size"] > 0
    r = svc.api("GET", ptl[0]["download_url"].removeprefix("/api/v1"))
    assert r.status_code == 200 and len(r.content) == ptl[0]["size"]

    run_dir = svc.run_dir(job_id)
    log = (run_dir / "output.log").read_text()
    assert "rank 0 of 2 on host" in log and "Slurm node n1" in log, log[-3000:]
    assert "rank 1 of 2 on host" in log and "Slurm node n2" in log, log[-3000:]
    assert (run_dir / "slurm.sbatch").read_text().count("--nnodes 2") == 1
    done = events(run_dir, "done")
    checksums = done[-1]["rank_weight_checksums"]
    assert len(checksums) == 2 and checksums[0] == checksums[1], checksums


def test_cancel_scancels_and_leaves_no_process(slurm_service):
    svc = slurm_service
    job_id = svc.submit("cancel me", teacher_job(svc.data, epochs=200))
    job = wait_training(svc, job_id)
    run_dir = svc.run_dir(job_id)
    assert len(ranks_on("n1", run_dir)) == 1 and len(ranks_on("n2", run_dir)) == 1  # what the cancel must end

    r = svc.api("POST", f"/jobs/{job_id}/cancel")
    assert r.status_code in (200, 202), r.text
    svc.wait(job_id, ("cancelled",), timeout=90)
    assert job["launcher"]["job_id"] not in svc.cluster.queue()
    assert svc.cluster.queue() == []
    assert training_processes(str(run_dir)) == []
    assert "JobState=CANCELLED" in svc.cluster.run("scontrol", "show", "job", "-o", job["launcher"]["job_id"]).stdout


def test_killing_one_nodes_ranks_fails_the_attempt_with_the_reason(slurm_service):
    svc = slurm_service
    job_id = svc.submit("lose a node", teacher_job(svc.data, epochs=200, max_attempts=1))
    job = wait_training(svc, job_id)
    victims = ranks_on("n2", svc.run_dir(job_id))
    assert len(victims) == 1
    rank = victims[0].environ()["RANK"]  # c10d rendezvous numbers the nodes in arrival order: n2 may be rank 0
    victims[0].send_signal(signal.SIGKILL)

    failed = svc.wait(job_id, ("failed",), timeout=120)
    error = failed["error"]
    assert f"Slurm job {job['launcher']['job_id']} failed" in error, error
    assert f"rank {rank} was killed by SIGKILL" in error, error
    wait_until(lambda: training_processes(str(svc.run_dir(job_id))) == [], 30, "the other node's rank to stop")
    assert svc.cluster.queue() == []


def test_restarted_worker_reattaches_to_the_running_slurm_job(slurm_service):
    svc = slurm_service
    job_id = svc.submit("outlive the worker", teacher_job(svc.data, epochs=30))
    job = wait_training(svc, job_id)
    slurm_id = job["launcher"]["job_id"]

    stop(svc.workers[-1], timeout=60)  # SIGTERM: a graceful stop leaves the Slurm job running
    assert slurm_id in svc.cluster.queue(), svc.logs()
    svc.start_worker()
    done = svc.wait(job_id, timeout=240)

    assert done["attempt"] == 1 and done["attempt_history"][-1]["attempt"] == 1
    assert done["launcher"]["job_id"] == slurm_id
    assert slurm_jobs_named(svc.cluster, job_id) == [slurm_id]  # only one Slurm job was ever submitted
    worker_logs = "".join(p.read_text() for p in svc.root.glob("worker-*.log"))
    assert f"left Slurm job {slurm_id} running" in worker_logs
    assert f"re-attached to attempt 1's Slurm job {slurm_id}" in worker_logs
    assert f"Slurm job {slurm_id} is RUNNING; re-attaching" in worker_logs  # not yet over when re-attached
    assert any(a["format"] == "ptl" for a in done["artifacts"])


def test_more_nodes_than_the_deployment_places_is_a_400_naming_the_field(slurm_service):
    r = slurm_service.api("POST", "/jobs", json={"kind": "teacher", "name": "too big",
                                                  "config": teacher_job(slurm_service.data, epochs=1, nodes=3)})
    assert r.status_code == 400, r.text
    body = r.json()
    assert "config.resources.nodes" in json.dumps(body) and "DISTILLERY_MAX_NODES" in json.dumps(body), body
