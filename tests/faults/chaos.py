"""A seeded chaos run on the production shape, and the invariants that must hold after it.

One copy for the bounded CI test (``tests/faults/test_chaos.py``) and the long runs of
``benchmarks/chaos.py``: :func:`make_schedule` turns a seed into fault times, kinds and hold
times (and job submission times); :class:`Chaos` plays it against a live :class:`Stack` (gunicorn
API, two named Celery workers, private PostgreSQL and Redis) while :class:`Monitor` probes the API
and watches the attempt processes; :func:`violations` checks what must be true once every job
has ended. Why each invariant: a fault may cost a job an attempt, never correctness:

- every job is final, and a failed job used up all of its attempts (a fault explains each one);
- a succeeded job carries its metrics and a top-1 (a resumed final epoch must not skip them);
- no two attempts of a job ran at once, seen live (processes) and after the fact (the times of the
  events and files in each attempt's folder: a run that lost its lease must not write on);
- each attempt registered at most one checkpoint; every artifact's sha256 and size match its file;
- no torchrun or rank is left once the jobs are final;
- the API answered 5xx only while PostgreSQL was down (a Redis outage or a killed worker is not
  the user's error, and not the API's).

Targets (which worker, which rank) are drawn from the same seeded generator among the live
candidates sorted by job id, so a seed names a schedule; the timing of a loaded machine does not
repeat exactly, so the table reports what each fault actually hit.
"""
from __future__ import annotations

import os
import random
import re
import signal
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import requests

from deit_core.files import sha256_file
from server.vocabulary import FAILED, FINAL_STATES, SUCCEEDED

from .conftest import PrivatePostgres, PrivateRedis, Stack, attempt_processes, events, is_rank, job_config, kill9

WORKER_KILL, WORKER_STOP, RANK_KILL, RANK_STOP = "worker SIGKILL", "worker SIGSTOP", "rank SIGKILL", "rank SIGSTOP"
API_KILL, REDIS_RESTART, PG_RESTART = "API SIGKILL", "Redis restart", "PostgreSQL restart"
KINDS = (WORKER_KILL, WORKER_STOP, RANK_KILL, RANK_STOP, API_KILL, REDIS_RESTART, PG_RESTART)
# How long a fault lasts (s): a stopped process's SIGSTOP..SIGCONT, a service's down time, a killed
# worker's time before it is started again under its old name. Some stops outlast the 6 s lease.
HOLD_S = {WORKER_KILL: (1, 4), WORKER_STOP: (2, 12), RANK_KILL: (0, 0), RANK_STOP: (2, 8), API_KILL: (1, 3),
          REDIS_RESTART: (1, 4), PG_RESTART: (3, 10)}
WORKER_NAMES = ("w1", "w2")
_RUN = re.compile(r"/runs/(\d+)/attempt-(\d+)(/|$)")


@dataclass(frozen=True)
class Fault:
    at: float  # seconds after the chaos starts
    kind: str
    hold: float


@dataclass(frozen=True)
class Schedule:
    seed: int
    faults: tuple[Fault, ...]
    submits: tuple[float, ...]  # when each job is submitted (s)

    def describe(self) -> str:
        return f"seed {self.seed}: " + ", ".join(f"{f.at:.0f}s {f.kind} ({f.hold:.0f}s)" for f in self.faults)


def make_schedule(seed: int, jobs: int, faults: int, duration: float) -> Schedule:
    """``faults`` faults spread over ``duration`` s (every kind at least once when there are enough
    faults, the rest drawn at random) and ``jobs`` submissions over its first half, from ``seed``."""
    rng = random.Random(seed)
    kinds = list(KINDS) * (faults // len(KINDS)) + rng.sample(KINDS, faults % len(KINDS))
    rng.shuffle(kinds)
    times = sorted(rng.uniform(0.1 * duration, duration) for _ in kinds)
    planned = tuple(Fault(round(t, 1), k, round(rng.uniform(*HOLD_S[k]), 1)) for t, k in zip(times, kinds))
    submits = tuple(sorted([0.0] * min(jobs, 2) + [round(rng.uniform(0, duration / 2), 1) for _ in range(jobs - 2)]))
    return Schedule(seed, planned, submits)


def run_of(cmdline: list[str]) -> tuple[int, int] | None:
    """(job id, attempt) of a process whose command line names a run folder."""
    for arg in cmdline:
        m = _RUN.search(arg)
        if m:
            return int(m.group(1)), int(m.group(2))
    return None


def _runs_of(procs: list[psutil.Process]) -> set[tuple[int, int]]:
    found = set()
    for p in procs:
        try:
            run = run_of(p.cmdline())
        except psutil.Error:
            continue
        if run:
            found.add(run)
    return found


def _is_rank(p: psutil.Process) -> bool:
    try:
        cmd = p.cmdline()
    except psutil.Error:
        return False
    return is_rank(cmd)


@dataclass
class Probe:
    sent: float
    answered: float
    status: int | None  # None: no answer (the API was down)
    what: str


@dataclass
class Monitor:
    """A thread that lists jobs through the API and the live attempt processes every ``every`` s."""

    stack: Stack
    runs_root: Path
    every: float = 0.5
    probes: list[Probe] = field(default_factory=list)
    together: list[tuple[float, int, list[int]]] = field(default_factory=list)  # (time, job, attempts alive)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    def record(self, what: str, send) -> requests.Response | None:
        """Call ``send()`` (a request to the API) and keep when it went, when it came back, its status."""
        sent = time.time()
        try:
            r = send()
        except requests.RequestException:
            r = None
        self.probes.append(Probe(sent, time.time(), r.status_code if r is not None else None, what))
        return r

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.record("GET /jobs", lambda: self.stack.api("GET", "/jobs"))
            alive = defaultdict(set)
            for job, attempt in _runs_of(attempt_processes(self.runs_root)):
                alive[job].add(attempt)
            for job, attempts in alive.items():
                if len(attempts) > 1:
                    self.together.append((time.time(), job, sorted(attempts)))
            self._stop.wait(self.every)


@dataclass
class Hit:
    """One fault as it was played: what it hit (jobs with a live attempt at that moment)."""

    fault: Fault
    at: float  # wall clock
    target: str
    jobs: set[int]


@dataclass
class Chaos:
    stack: Stack
    pg: PrivatePostgres
    redis: PrivateRedis
    data: Path
    schedule: Schedule
    epochs: int = 1  # a resume after the only epoch's checkpoint is a resumed final epoch (V1)
    max_attempts: int = 4
    hits: list[Hit] = field(default_factory=list)
    pg_down: list[tuple[float, float]] = field(default_factory=list)
    jobs: list[int] = field(default_factory=list)
    monitor: Monitor | None = None
    workers: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.schedule.seed)
        self.runs_root = Path(self.stack.env["DISTILLERY_STORAGE"]).resolve() / "runs"
        self.pending = list(self.schedule.submits)
        self.port = 0

    # ------------------------------------------------------------------------- the run
    def start(self) -> None:
        self.runs_root.mkdir(parents=True, exist_ok=True)
        api = self.stack.start_api()
        self.port = int(self.stack.url.rsplit(":", 1)[1])
        self.api_proc = api
        for name in WORKER_NAMES:
            self.workers[name] = self.stack.start_worker(name, DISTILLERY_WORKER_NAME=name)
        self.monitor = Monitor(self.stack, self.runs_root)
        self.monitor.start()

    def play(self) -> None:
        """Submit the jobs and inject the faults at their times (one fault at a time, each one
        over before the next: a late fault starts late)."""
        t0 = time.time()
        for fault in self.schedule.faults:
            self._submit_due(time.time() - t0)
            while time.time() - t0 < fault.at:
                time.sleep(0.2)
                self._submit_due(time.time() - t0)
            self.inject(fault)
        while self.pending:
            self._submit_due(float("inf"))

    def _submit_due(self, now: float) -> None:
        while self.pending and self.pending[0] <= now:
            self.pending.pop(0)
            self.submit()

    def submit(self) -> None:
        """POST one job (recorded as a probe); a refused POST is tried again until it is taken."""
        cfg = job_config(self.data, epochs=self.epochs, max_attempts=self.max_attempts)
        body = {"kind": cfg["kind"], "name": f"chaos-{len(self.jobs) + 1}", "config": cfg}
        for _ in range(60):
            r = self.monitor.record("POST /jobs", lambda: self.stack.api("POST", "/jobs", json=body))
            if r is not None and r.status_code == 201:
                self.jobs.append(r.json()["id"])
                return
            time.sleep(1)
        raise AssertionError(f"POST /jobs refused for a minute: {r and r.text}")

    def live_jobs(self) -> set[int]:
        return {job for job, _ in _runs_of(attempt_processes(self.runs_root))}

    def inject(self, fault: Fault) -> None:
        hit = Hit(fault, time.time(), "", self.live_jobs())
        hit.target = {WORKER_KILL: self._worker_kill, WORKER_STOP: self._worker_stop, RANK_KILL: self._rank_kill,
                      RANK_STOP: self._rank_stop, API_KILL: self._api_kill, REDIS_RESTART: self._redis_restart,
                      PG_RESTART: self._pg_restart}[fault.kind](fault, hit)
        self.hits.append(hit)

    # ------------------------------------------------------------------------- the faults
    def _worker(self, hit: Hit) -> tuple[str, psutil.Process]:
        name = self.rng.choice(sorted(self.workers))
        proc = psutil.Process(self.workers[name].pid)
        hit.jobs = {job for job, _ in _runs_of(proc.children(recursive=True))}
        return name, proc

    def _worker_kill(self, fault: Fault, hit: Hit) -> str:
        name, _ = self._worker(hit)
        kill9(self.workers[name])
        time.sleep(fault.hold)
        self.workers[name] = self.stack.start_worker(name, DISTILLERY_WORKER_NAME=name)  # the same name again
        return name

    def _worker_stop(self, fault: Fault, hit: Hit) -> str:
        name, proc = self._worker(hit)
        _hold(proc.pid, fault.hold)
        return name

    def _rank(self, hit: Hit) -> psutil.Process | None:
        ranks = sorted((p for p in attempt_processes(self.runs_root) if _is_rank(p)), key=lambda p: p.pid)
        if not ranks:
            hit.jobs = set()
            return None
        rank = self.rng.choice(ranks)
        hit.jobs = {job for job, _ in _runs_of([rank])}
        return rank

    def _rank_kill(self, fault: Fault, hit: Hit) -> str:
        rank = self._rank(hit)
        if rank is None:
            return "no rank alive"
        try:
            rank.kill()
        except psutil.Error:
            return "the rank had ended"
        return f"pid {rank.pid}"

    def _rank_stop(self, fault: Fault, hit: Hit) -> str:
        rank = self._rank(hit)
        if rank is None:
            return "no rank alive"
        _hold(rank.pid, fault.hold)
        return f"pid {rank.pid}"

    def _api_kill(self, fault: Fault, hit: Hit) -> str:
        os.killpg(self.api_proc.pid, signal.SIGKILL)  # gunicorn's master and its workers
        self.api_proc.wait()
        time.sleep(fault.hold)
        self.api_proc = self.stack.start_api(self.port)
        return f"port {self.port}"

    def _redis_restart(self, fault: Fault, hit: Hit) -> str:
        """Redis down for ``hold`` s (its messages lost); a due job is submitted during the outage."""
        self.redis.stop()
        try:
            if self.pending:
                self.pending.pop(0)
                self.submit()
            time.sleep(fault.hold)
        finally:
            self.redis.start()
        return f"port {self.redis.port}"

    def _pg_restart(self, fault: Fault, hit: Hit) -> str:
        down = time.time()
        self.pg.stop()
        try:
            time.sleep(fault.hold)
        finally:
            self.pg.start()
            self.pg_down.append((down, time.time()))
        return f"port {self.pg.port}"

    # ------------------------------------------------------------------------- the end
    def finish(self, timeout: float) -> dict[int, dict]:
        """Wait until every job is final (or ``timeout`` s); stop the monitor; the jobs as the API has them."""
        deadline = time.monotonic() + timeout
        final: dict[int, dict] = {}
        while time.monotonic() < deadline and len(final) < len(self.jobs):
            for job_id in self.jobs:
                if job_id not in final:
                    r = self.monitor.record("GET /jobs/id", lambda j=job_id: self.stack.api("GET", f"/jobs/{j}"))
                    if r is not None and r.status_code == 200 and r.json()["state"] in FINAL_STATES:
                        final[job_id] = r.json()
            time.sleep(1)
        self.monitor.stop()
        return {job_id: final.get(job_id) or self.stack.job(job_id) for job_id in self.jobs}


def _hold(pid: int, seconds: float) -> None:
    """SIGSTOP ``pid`` for ``seconds``, then SIGCONT (always: a stopped process must not be left)."""
    try:
        os.kill(pid, signal.SIGSTOP)
    except ProcessLookupError:
        return
    try:
        time.sleep(seconds)
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass


# ----------------------------------------------------------------------------- invariants
# What training writes in an attempt's folder (besides its events): the checkpoints and final/.
TRAINING_FOLDERS = ("checkpoints", "final")


def attempt_span(run_dir: Path) -> tuple[float, float] | None:
    """(first, last) time an attempt *trained*: its training events and the mtimes of what training
    writes (checkpoints/, final/). Not the worker's files in the folder (job.json at the claim, the
    lease file, output.log) nor an export's scratch: a superseded attempt's exporter may still finish
    in its own folder (it registers nothing: artifacts are fenced), which is not training twice."""
    events_at = [ev["time"] for kind in ("start", "step", "epoch", "checkpoint", "done")
                 for ev in events(run_dir, kind) if isinstance(ev.get("time"), (int, float))]
    files_at = [p.stat().st_mtime for folder in TRAINING_FOLDERS for p in (run_dir / folder).rglob("*") if p.is_file()]
    if not events_at and not files_at:
        return None
    # It began at its first event: a resumed attempt's checkpoints/ holds the previous attempt's last
    # checkpoint, hard-linked (the same file, so its mtime is the previous attempt's), before it trains.
    first = min(events_at) if events_at else min(files_at)
    return first, max(events_at + files_at)


def overlapping_attempts(runs_root: Path, job_id: int) -> list[str]:
    spans = []
    for d in sorted((runs_root / str(job_id)).glob("attempt-*"), key=lambda p: int(p.name.split("-")[1])):
        span = attempt_span(d)
        if span:
            spans.append((d.name, *span))
    return [f"job {job_id}: {a} active until {a_end:.1f}, after {b} began at {b_start:.1f}"
            for (a, _, a_end), (b, b_start, _) in zip(spans, spans[1:]) if a_end > b_start]


def job_violations(job: dict) -> list[str]:
    out = []
    if job["state"] not in FINAL_STATES:
        out.append(f"job {job['id']} is {job['state']}, not final")
    if job["state"] == SUCCEEDED and not any("top1" in k for k in job.get("metrics") or {}):
        out.append(f"job {job['id']} succeeded with no top1 in its metrics: {job.get('metrics')}")
    history = job.get("attempt_history") or []
    if job["state"] == FAILED and len(history) < job["max_attempts"]:
        out.append(f"job {job['id']} failed after {len(history)} of {job['max_attempts']} attempts: {job.get('error')}")
    return out


def artifact_violations(stack: Stack) -> list[str]:
    out = []
    per_attempt: Counter = Counter()
    for job_id, fmt, path, size, sha in stack.sql("SELECT job_id, format, path, size, sha256 FROM artifacts"):
        p = Path(path)
        if fmt == "checkpoint":
            per_attempt[(job_id, next((part for part in p.parts if part.startswith("attempt-")), path))] += 1
        if not p.is_file():
            out.append(f"job {job_id}: artifact {path} has no file")
        elif p.stat().st_size != size or sha256_file(p) != sha:
            out.append(f"job {job_id}: artifact {path} does not match its size/sha256")
    out += [f"job {job}: {n} checkpoint artifacts for {attempt}" for (job, attempt), n in per_attempt.items() if n > 1]
    return out


def api_violations(probes: list[Probe], pg_down: list[tuple[float, float]]) -> list[str]:
    """Each 5xx must have been in flight while PostgreSQL was down."""
    def during_outage(p: Probe) -> bool:
        return any(p.sent <= up and p.answered >= down for down, up in pg_down)

    return [f"{p.what} answered {p.status} at {p.answered:.1f} with PostgreSQL up"
            for p in probes if p.status is not None and p.status >= 500 and not during_outage(p)]


def violations(chaos: Chaos, jobs: dict[int, dict], orphan_wait_s: float = 30) -> list[str]:
    """Every invariant, checked once the jobs have ended; an empty list when all hold."""
    out = [v for job in jobs.values() for v in job_violations(job)]
    out += [f"job {job}: attempts {attempts} alive at once at {t:.1f}" for t, job, attempts in chaos.monitor.together]
    out += [v for job_id in jobs for v in overlapping_attempts(chaos.runs_root, job_id)]
    out += artifact_violations(chaos.stack)
    out += api_violations(chaos.monitor.probes, chaos.pg_down)
    deadline = time.monotonic() + orphan_wait_s
    while attempt_processes(chaos.runs_root) and time.monotonic() < deadline:
        time.sleep(1)
    out += [f"orphan process {p.pid}: {' '.join(p.cmdline())}" for p in attempt_processes(chaos.runs_root)
            if p.is_running()]
    return out


# ----------------------------------------------------------------------------- the table
def outcome(jobs: list[dict]) -> str:
    """What became of a set of jobs: final states, and how many needed a later attempt."""
    if not jobs:
        return "nothing to hit"
    states = Counter(j["state"] for j in jobs)
    later = sum(1 for j in jobs if j["state"] == SUCCEEDED and j["attempt"] > 1)
    text = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
    return text + (f" ({later} on a later attempt)" if later else "")


def table(chaos: Chaos, jobs: dict[int, dict]) -> str:
    """Markdown: per fault kind, how often it was injected, the jobs it hit and what became of them."""
    rows = ["| fault | count | jobs affected | outcome |", "|---|---:|---:|---|"]
    for kind in KINDS:
        hits = [h for h in chaos.hits if h.fault.kind == kind]
        if not hits:
            continue
        hit_jobs = sorted(set().union(*(h.jobs for h in hits)))
        rows.append(f"| {kind} | {len(hits)} | {len(hit_jobs)} | {outcome([jobs[j] for j in hit_jobs if j in jobs])} |")
    rows.append(f"| (all jobs) | | {len(jobs)} | {outcome(list(jobs.values()))} |")
    return "\n".join(rows)
