"""The Slurm launcher: a training run as a Slurm batch job, for ``DISTILLERY_LAUNCHER=slurm``.

The worker writes an sbatch script into the run directory (on the storage path every node mounts)
and submits it with ``sbatch --parsable``. The script asks for ``resources.nodes`` nodes with one
task each; its body runs ``srun`` -> one ``torchrun --nnodes N --nproc_per_node P`` per node, which
join through torch's c10d rendezvous on the first node (``<first node>:<port from the Slurm job
id>``, id ``<job>-<attempt>``), as the reference DeiT repo's submitit launcher places its runs.
Every rank's output is appended to the run's ``output.log``; rank 0 writes ``metrics.jsonl`` there,
which the worker tails exactly as for a local run.

The worker supervises the batch job through Slurm: ``scontrol show job`` (kept for ``MinJobAge``
after the end, with the state, reason and exit code; ``squeue`` for "is it still listed"), and
``sacct`` only as a fallback, since without slurmdbd it has nothing to say. A cancel is
``scancel`` and then a wait until ``squeue`` no longer lists the job (Slurm kills every process of
every step on every node). A job that ends FAILED, TIMEOUT, PREEMPTED, NODE_FAIL, ... ends the
attempt with Slurm's state and reason in the job's error.

Unlike a local run, a Slurm job does not die with its worker: a worker that stops (SIGTERM) leaves
it running, and the next worker re-attaches to it (``worker.reattach``, :meth:`SlurmLauncher.reattach`)
instead of starting another.
"""
from __future__ import annotations

import logging
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from deit_core.files import write_temp_beside
from server.settings import Settings
from server.vocabulary import SLURM

from . import launch
from .launch import TrainSpec
from .run_contract import OUTPUT_LOG, SLURM_SCRIPT

log = logging.getLogger(__name__)

RDZV_PORT_BASE, RDZV_PORT_SPAN = 29500, 20000
# Slurm job states in which processes of the job may still exist (squeue's long names).
ALIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "RESIZING", "REQUEUED", "REQUEUE_HOLD",
         "REQUEUE_FED", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD", "SPECIAL_EXIT"}
# Why an ended job did not succeed, in words for the job's error.
ENDINGS = {"FAILED": "failed", "TIMEOUT": "hit its time limit", "PREEMPTED": "was preempted",
           "NODE_FAIL": "lost a node (NODE_FAIL)", "OUT_OF_MEMORY": "ran out of memory",
           "BOOT_FAIL": "could not boot its nodes", "DEADLINE": "missed its deadline",
           "CANCELLED": "was cancelled outside the service (scancel)"}
COMMAND_TIMEOUT_S = 30


class SlurmError(RuntimeError):
    """A Slurm command failed (the message has its stderr)."""


def lease_file_grace_s(settings: Settings) -> float:
    """How long past the database lease the run's ``lease.json`` stays valid under Slurm.

    A local run dies with its worker (``PR_SET_PDEATHSIG``) and its lease file expires with the
    database lease. A Slurm job outlives its worker on purpose: the next worker's reconciler takes
    the expired database lease over (``lease_s`` + ``lease_s/2`` + a sweep after the last heartbeat)
    and re-attaches. The training loop stops itself when ``lease.json`` runs out
    (``deit_core.lease``), so that file must outlast a worker restart: 10 leases, at least 10
    minutes. A worker that never comes back leaves the run training that long, then it stops."""
    return max(600.0, 10 * settings.lease_s)


def rdzv_port(slurm_job_id: str | int) -> int:
    """The c10d rendezvous port, a function of the Slurm job id: two jobs sharing a first node differ."""
    return RDZV_PORT_BASE + int(slurm_job_id) % RDZV_PORT_SPAN


def job_name(job_id: int, attempt: int) -> str:
    return f"distillery-{job_id}-a{attempt}"


def sbatch_script(settings: Settings, job_id: int, attempt: int, run_dir: Path, nodes: int, per_node: int,
                  train_args: list[str], python: str = sys.executable, workdir: Path | None = None) -> str:
    """The batch script for one attempt: #SBATCH options from the job and ``DISTILLERY_SLURM_*``,
    then srun -> torchrun per node -> ``python -m deit_core.train ...train_args``."""
    q = shlex.quote
    opts = [f"--nodes={nodes}", "--ntasks-per-node=1", f"--job-name={job_name(job_id, attempt)}",
            f"--output={run_dir}/{OUTPUT_LOG}", "--open-mode=append", f"--chdir={workdir or Path.cwd()}"]
    if settings.slurm_partition:
        opts.append(f"--partition={settings.slurm_partition}")
    if settings.slurm_account:
        opts.append(f"--account={settings.slurm_account}")
    if settings.slurm_time_limit:
        opts.append(f"--time={settings.slurm_time_limit}")
    if settings.slurm_gpus_per_node:
        opts.append(f"--gpus-per-node={settings.slurm_gpus_per_node}")
    opts += list(settings.slurm_sbatch_args)
    torchrun = [python, "-m", "torch.distributed.run", "--nnodes", str(nodes), "--nproc_per_node", str(per_node),
                "--rdzv-backend", "c10d", "--rdzv-endpoint", '"$MASTER_ADDR:$MASTER_PORT"',
                "--rdzv-id", f"{job_id}-{attempt}", "-m", "deit_core.train", *train_args]
    body = " ".join(a if a.startswith('"$') else q(a) for a in torchrun)
    return "\n".join([
        "#!/bin/bash",
        f"# distillery job {job_id}, attempt {attempt}: written by worker/slurm.py, submitted with sbatch --parsable",
        *(f"#SBATCH {q(o)}" for o in opts),
        "set -u",
        'FIRST_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        "# the first node's address as Slurm knows it (NodeAddr; the node name when they are the same)",
        'MASTER_ADDR=$(scontrol show node "$FIRST_NODE" | sed -n "s/.*NodeAddr=\\([^ ]*\\).*/\\1/p" | head -n 1)',
        'MASTER_ADDR=${MASTER_ADDR:-$FIRST_NODE}',
        f"MASTER_PORT=$(( {RDZV_PORT_BASE} + SLURM_JOB_ID % {RDZV_PORT_SPAN} ))",
        'echo "slurm job $SLURM_JOB_ID on $SLURM_JOB_NODELIST: rendezvous at $MASTER_ADDR:$MASTER_PORT"',
        f"srun --kill-on-bad-exit=1 --nodes={nodes} --ntasks-per-node=1 {body}",
        "rc=$?",
        'echo "srun exited with $rc"',
        "exit $rc",
        "",
    ])


def _run(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, env=env)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SlurmError(f"{argv[0]}: {e}") from e


def submit(script: Path, env: dict[str, str]) -> str:
    """``sbatch --parsable``; returns the Slurm job id."""
    r = _run(["sbatch", "--parsable", str(script)], env)
    if r.returncode != 0:
        raise SlurmError(f"sbatch failed (exit {r.returncode}): {r.stderr.strip() or r.stdout.strip()}")
    return r.stdout.strip().split(";")[0]


@dataclass
class SlurmState:
    """A Slurm job as Slurm last described it. ``state`` is None when no command knows the job."""

    state: str | None
    reason: str = ""
    exit_code: int = 0
    signal: int = 0

    @property
    def alive(self) -> bool:
        return self.state in ALIVE


def _exit_code(value: str) -> tuple[int, int]:
    m = re.match(r"(\d+):(\d+)", value or "")
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def job_state(slurm_id: str) -> SlurmState:
    """``scontrol show job`` (which keeps ended jobs for MinJobAge), else ``sacct``, else ``squeue``."""
    r = _run(["scontrol", "show", "job", "-o", str(slurm_id)])
    if r.returncode == 0 and "JobState=" in r.stdout:
        fields = dict(f.split("=", 1) for f in r.stdout.split() if "=" in f)
        code, sig = _exit_code(fields.get("ExitCode", ""))
        return SlurmState(fields.get("JobState"), fields.get("Reason", ""), code, sig)
    r = _run(["sacct", "-n", "-X", "-P", "-j", str(slurm_id), "-o", "State,ExitCode,Reason"])
    if r.returncode == 0 and r.stdout.strip():
        state, code, reason = (r.stdout.strip().splitlines()[0].split("|") + ["", ""])[:3]
        c, s = _exit_code(code)
        return SlurmState(state.split()[0], reason, c, s)
    r = _run(["squeue", "-h", "-j", str(slurm_id), "-o", "%T|%r"])
    if r.returncode == 0 and r.stdout.strip():
        state, _, reason = r.stdout.strip().splitlines()[0].partition("|")
        return SlurmState(state, reason)
    return SlurmState(None)


def listed(slurm_id: str) -> bool:
    """Whether ``squeue`` still lists the job (in any state but ended and cleaned up)."""
    r = _run(["squeue", "-h", "-j", str(slurm_id), "-o", "%T"])
    states = r.stdout.split() if r.returncode == 0 else []
    return any(s in ALIVE for s in states)


def find_job(job_id: int, attempt: int) -> str | None:
    """The Slurm job id of an attempt by its job name (a worker that died between ``sbatch`` and
    recording the id left only the name)."""
    r = _run(["squeue", "-h", "--name", job_name(job_id, attempt), "-o", "%i"])
    ids = r.stdout.split() if r.returncode == 0 else []
    return ids[0] if ids else None


def describe_end(slurm_id: str, st: SlurmState) -> str | None:
    """Slurm's reason an ended job did not succeed, for the job's error; None when it completed."""
    if st.state == "COMPLETED" and st.exit_code == 0:
        return None
    if st.state is None:
        return f"Slurm job {slurm_id} is gone (neither scontrol, sacct nor squeue knows it)"
    what = ENDINGS.get(st.state, f"ended {st.state}")
    reason = f", reason {st.reason}" if st.reason and st.reason != "None" else ""
    return f"Slurm job {slurm_id} {what} (state {st.state}{reason}, exit code {st.exit_code}:{st.signal})"


class SlurmRun:
    """A Slurm batch job, supervised like a local process (see ``worker.launchers``)."""

    detachable = True  # a stopping worker leaves it running for the next worker to re-attach

    def __init__(self, slurm_id: str, poll_s: float = 2.0):
        self.slurm_id, self.poll_s = str(slurm_id), poll_s
        self.last: SlurmState | None = None
        self._checked = 0.0

    def row_values(self) -> dict[str, object]:
        return {"pid": None, "launcher": SLURM, "launcher_job_id": self.slurm_id}

    def describe(self) -> str:
        return f"Slurm job {self.slurm_id}"

    def poll(self) -> int | None:
        """None while Slurm has the job (processes may exist); then its exit code (0: completed)."""
        now = time.monotonic()
        if now - self._checked < self.poll_s:
            return None
        self._checked = now
        try:
            st = job_state(self.slurm_id)
        except SlurmError as e:  # slurmctld unreachable for a moment: the job is not over because of that
            log.warning("could not ask Slurm about job %s: %s", self.slurm_id, e)
            return None
        self.last = st
        if st.alive:
            return None
        if st.state == "COMPLETED":
            return st.exit_code
        return st.exit_code or (128 + st.signal if st.signal else 1)

    def ended_reason(self) -> str | None:
        return describe_end(self.slurm_id, self.last) if self.last is not None and not self.last.alive else None

    def stop(self, grace_s: float, logger: logging.Logger | logging.LoggerAdapter = log) -> int:
        """``scancel``, then wait until ``squeue`` no longer lists the job: Slurm has then signalled
        (SIGTERM, SIGKILL after ``KillWait``) and reaped every process of it on every node."""
        r = _run(["scancel", self.slurm_id])
        if r.returncode != 0:
            logger.warning("scancel %s failed: %s", self.slurm_id, r.stderr.strip())
        deadline = time.monotonic() + grace_s + 120
        while listed(self.slurm_id) and time.monotonic() < deadline:
            time.sleep(0.5)
        if listed(self.slurm_id):
            logger.warning("Slurm job %s is still listed %.0fs after scancel", self.slurm_id, grace_s + 120)
        self._checked = 0.0
        return self.poll() or 1


class SlurmLauncher:
    """The launcher interface (``worker.launchers``) on Slurm: ``start`` submits a batch job built
    from the :class:`~worker.launch.TrainSpec`, ``reattach`` supervises one an earlier worker submitted."""

    name = SLURM

    def __init__(self, settings: Settings):
        self.settings = settings

    def start(self, spec: TrainSpec, logger: logging.Logger | logging.LoggerAdapter = log) -> SlurmRun:
        """Write ``<run>/slurm.sbatch`` (atomically) and submit it. The environment is exported to
        the job (sbatch's default ``--export=ALL``): GPUs are Slurm's to give, so
        ``CUDA_VISIBLE_DEVICES`` is left to Slurm when it hands out GPUs and set empty (a CPU run,
        gloo) when it does not."""
        env = launch.child_env((), spec.world_size)
        if self.settings.slurm_gpus_per_node:
            env.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            env["CUDA_VISIBLE_DEVICES"] = ""
        text = sbatch_script(self.settings, spec.job_id, spec.attempt, spec.run_dir, spec.nodes, spec.processes_per_node,
                             spec.train_args())
        script = spec.run_dir / SLURM_SCRIPT
        os.replace(write_temp_beside(script, text.encode(), SLURM_SCRIPT), script)  # atomic: never half a script
        with open(spec.run_dir / OUTPUT_LOG, "ab") as out:
            out.write(f"$ sbatch --parsable {script}\n".encode())
        slurm_id = submit(script, env)
        logger.info("submitted Slurm job %s (%d node(s) x %d process(es)): %s", slurm_id, spec.nodes,
                    spec.processes_per_node, script)
        return SlurmRun(slurm_id, self.settings.slurm_poll_s)

    def reattach(self, launcher_job_id: str) -> SlurmRun:
        return SlurmRun(launcher_job_id, self.settings.slurm_poll_s)

    def lease_file_grace_s(self) -> float:
        return lease_file_grace_s(self.settings)


def available() -> bool:
    """Whether the Slurm client commands are on PATH here."""
    return all(_which(c) for c in ("sbatch", "squeue", "scontrol", "scancel"))


def _which(cmd: str) -> bool:
    return any(os.access(Path(d) / cmd, os.X_OK) for d in os.environ.get("PATH", "").split(os.pathsep) if d)
