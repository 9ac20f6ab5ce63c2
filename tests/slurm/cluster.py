"""A real two-node Slurm cluster on this one host, for the Slurm launcher's tests and benchmark.

Two ``slurmd`` daemons (``slurmd -N n1`` / ``slurmd -N n2``, ports 17001/17002, same
``NodeHostname``) and one ``slurmctld``, all on a private ``slurm.conf`` in a temp folder, with a
private ``munged`` on its own socket (``AuthInfo=socket=...``), so nothing on the machine's own
Slurm or munge setup is touched or needed. Everything that talks to this cluster (sbatch, squeue,
the worker) finds it through ``SLURM_CONF``. ``ProctrackType=proctrack/linuxproc`` and
``TaskPlugin=task/none``: no cgroups needed in a container. Daemons run as root (``SlurmUser=root``).
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

SLURM_BINARIES = ("slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "sinfo", "munged")
NODE_PORTS = {"n1": 17001, "n2": 17002}


def missing_binaries() -> list[str]:
    return [b for b in SLURM_BINARIES if shutil.which(b) is None and not Path(f"/usr/sbin/{b}").exists()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bin(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


class SlurmCluster:
    """:meth:`start` writes the config and starts munged, slurmctld and two slurmds; :meth:`stop` ends them."""

    def __init__(self, root: Path | None = None, cpus_per_node: int = 2):
        self.root = Path(root or tempfile.mkdtemp(prefix="distillery-slurm-", dir="/tmp"))
        self.cpus = cpus_per_node
        self.conf = self.root / "slurm.conf"
        self.munge_socket = self.root / "munge" / "munge.socket.2"
        self.ctld_port = _free_port()
        self.procs: list[subprocess.Popen] = []

    @property
    def env(self) -> dict[str, str]:
        """What a client (sbatch, squeue, a worker) needs in its environment to use this cluster."""
        return {"SLURM_CONF": str(self.conf)}

    def write_config(self) -> None:
        host = socket.gethostname()
        for d in ("state", "spool", "log", "munge"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        nodes = "\n".join(f"NodeName={n} NodeHostname={host} NodeAddr=127.0.0.1 Port={port} CPUs={self.cpus} "
                          f"RealMemory=1000 State=UNKNOWN" for n, port in NODE_PORTS.items())
        self.conf.write_text(f"""\
ClusterName=distillery-test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={self.ctld_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={self.munge_socket}
CredType=cred/munge
StateSaveLocation={self.root}/state
SlurmdSpoolDir={self.root}/spool/%n
SlurmctldPidFile={self.root}/slurmctld.pid
SlurmdPidFile={self.root}/slurmd.%n.pid
SlurmctldLogFile={self.root}/log/slurmctld.log
SlurmdLogFile={self.root}/log/slurmd.%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MpiDefault=none
KillWait=5
MinJobAge=600
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
SchedulerParameters=sched_interval=1
{nodes}
PartitionName=debug Nodes={','.join(NODE_PORTS)} Default=YES MaxTime=INFINITE State=UP
""")

    def _start_munged(self) -> None:
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        subprocess.run([_bin("munged"), "--force", f"--socket={self.munge_socket}", f"--key-file={key}",
                        f"--pid-file={self.root}/munge/munged.pid", f"--log-file={self.root}/log/munged.log",
                        f"--seed-file={self.root}/munge/munged.seed"], check=True, capture_output=True, timeout=30)

    def _daemon(self, *argv: str) -> None:
        env = {**os.environ, **self.env}
        log = open(self.root / "log" / f"{Path(argv[0]).name}{'-' + argv[-1] if '-N' in argv else ''}.out", "ab")
        self.procs.append(subprocess.Popen(list(argv), env=env, stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True))

    def start(self, timeout: float = 60) -> None:
        self.write_config()
        self._start_munged()
        self._daemon(_bin("slurmctld"), "-D", "-i")
        for node in NODE_PORTS:
            self._daemon(_bin("slurmd"), "-D", "-N", node)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.idle_nodes() >= set(NODE_PORTS):
                return
            dead = [p.args for p in self.procs if p.poll() is not None]
            if dead:
                raise RuntimeError(f"slurm daemons exited: {dead}\n{self.logs()}")
            time.sleep(0.5)
        raise RuntimeError(f"the nodes did not become idle in {timeout:.0f}s\n{self.logs()}")

    def run(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(list(argv), env={**os.environ, **self.env}, capture_output=True, text=True, timeout=timeout)

    def idle_nodes(self) -> set[str]:
        r = self.run("sinfo", "-h", "-N", "-o", "%N %t")
        return {line.split()[0] for line in r.stdout.splitlines() if line.split()[1:] == ["idle"]}

    def queue(self) -> list[str]:
        """Job ids ``squeue`` lists (any state)."""
        r = self.run("squeue", "-h", "-o", "%i")
        return r.stdout.split()

    def logs(self, n: int = 30) -> str:
        out = []
        for f in sorted((self.root / "log").glob("*")):
            lines = f.read_text(errors="replace").splitlines()[-n:]
            out.append(f"--- {f.name} ---\n" + "\n".join(lines))
        return "\n".join(out)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        pid_file = self.root / "munge" / "munged.pid"
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text().strip()), 15)
            except (ValueError, ProcessLookupError):
                pass
