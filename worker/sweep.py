"""A sweep's driver: an Optuna study whose trials are distill jobs, advanced by whoever calls.

A sweep holds no worker slot. Its record is the database: the sweep row, its children (the
``teacher_outputs`` job that fills the shared teacher-output cache first, then one distill job per
trial, ``jobs.trial_number`` = the Optuna trial's number) and the Optuna study. :func:`advance` is
idempotent and quick: it reconciles the children with the study (reports each running trial's
per-epoch val top-1, prunes weak trials, tells finished ones), asks new trials up to ``parallel``
in flight until ``trials`` exist, each only into a free slot of the owner's cap on jobs in flight
(``server.quotas``: the sweep waits for a slot rather than pass the cap), and ends the sweep.
The run task calls it when the sweep's message is claimed (then returns at once), after every
trial's run, and every worker's reconciler calls it on each tick, so a sweep goes on whichever
workers live.

Two callers at once: :func:`advance` first takes the sweep row by compare-and-set
(``lease_owner`` = the caller, for at most :data:`MUTEX_S`; ``lease_expires_at`` stays null, so
the reconciler's expired-lease pass, which only looks at leases with an expiry, never touches a
sweep). The loser returns without doing anything; a caller that died frees the row after
:data:`MUTEX_S`.

Optuna's storage (:func:`storage`) lives in our database but apart from our schema: Optuna's
``RDBStorage`` stamps and reads its own Alembic revision in a table named ``alembic_version``,
the very table our migrations (``migrations/``) use. On one schema it would read our revision as
its own and refuse to start (or, on an empty table, stamp its revision over ours). So on
PostgreSQL its tables live in a schema of their own, :data:`OPTUNA_SCHEMA` (the connection's
``search_path`` is that schema only), and on SQLite in a file beside ours (``<db>.optuna.sqlite``).
"""
from __future__ import annotations

import logging
import threading
from datetime import timedelta
from typing import Any

from sqlalchemy import create_engine, or_, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from server import lifecycle, quotas
from server.db import Database, database_unavailable
from server.job_spec import JobSpec, ParentRef
from server.models import Job, MetricPoint, utcnow
from server.settings import Settings
from server.sweeps import PARAMS, apply_params, sampler_seed, summarize, trial_jobs
from server.vocabulary import (
    ACTIVE_STATES,
    CANCELLED,
    DISTILL,
    FAILED,
    FINAL_STATES,
    PRUNED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    SWEEP,
    TEACHER_OUTPUTS,
)

from .registry import worker_name

log = logging.getLogger(__name__)

OPTUNA_SCHEMA = "distillery_optuna"
MUTEX_S = 120.0
WAITING = "waiting for a free slot"  # the phase of a sweep whose owner's cap is full (server.quotas)
_storages: dict[str, Any] = {}
_storage_lock = threading.Lock()


# ---------------------------------------------------------------------------------------------
# Optuna's storage, apart from our schema
# ---------------------------------------------------------------------------------------------
def optuna_url(database_url: str) -> tuple[str, dict[str, Any]]:
    """(URL, engine kwargs) of Optuna's storage for our ``database_url`` (see the module docstring)."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if not url.database or url.database == ":memory:":
            raise ValueError("sweeps need a file or server database (Optuna's storage lives beside it)")
        stem, dot, ext = url.database.rpartition(".")
        path = f"{stem}.optuna.{ext}" if dot and "/" not in ext else f"{url.database}.optuna.sqlite"
        return url.set(database=path).render_as_string(hide_password=False), {"connect_args": {"timeout": 30}}
    if url.get_backend_name() == "postgresql":
        return (url.render_as_string(hide_password=False),
                {"connect_args": {"options": f"-csearch_path={OPTUNA_SCHEMA}"}, "pool_pre_ping": True})
    raise ValueError(f"sweeps support PostgreSQL and SQLite, not {url.get_backend_name()}")


def storage(database_url: str):
    """This process's Optuna ``RDBStorage`` for the deployment's database (created once)."""
    import optuna

    with _storage_lock:
        if database_url not in _storages:
            url, kwargs = optuna_url(database_url)
            if url.startswith("postgresql"):
                engine = create_engine(database_url)
                try:
                    with engine.begin() as c:
                        c.execute(text(f"CREATE SCHEMA IF NOT EXISTS {OPTUNA_SCHEMA}"))
                except Exception:  # another worker created it at the same moment
                    log.debug("CREATE SCHEMA %s raced", OPTUNA_SCHEMA, exc_info=True)
                finally:
                    engine.dispose()
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            _storages[database_url] = optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
        return _storages[database_url]


def distributions(space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The stored search space as Optuna distributions."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out = {}
    for name, spec in space.items():
        if "choices" in spec:
            out[name] = CategoricalDistribution(spec["choices"])
        elif PARAMS[name][2] is int:
            out[name] = IntDistribution(spec["low"], spec["high"], log=spec["log"], step=spec.get("step") or 1)
        else:
            out[name] = FloatDistribution(spec["low"], spec["high"], log=spec["log"], step=spec.get("step"))
    return out


# ---------------------------------------------------------------------------------------------
# Pruning: on the share of each trial's own schedule
# ---------------------------------------------------------------------------------------------
# Trials of one sweep may run for different ``epochs`` (and ``lr``, hence cosine schedules of other
# lengths). Compared at the same absolute epoch, a 10-epoch trial at epoch 3 is still at high lr
# while a 4-epoch one has nearly annealed, so the median pruner stopped long schedules for being
# early, not for being weak. So a trial's epoch ``e`` of ``E`` is reported to Optuna at step
# ``round(100 * e / E)``, the percent of its own schedule it has run, and each percent after it, up
# to the next epoch's, carries its value (the val top-1 of the last epoch done by that share).
# Trials of any lengths then meet at every step: the median at a trial's step compares it with
# where each finished trial stood at the same share of its own schedule, or a little before (never
# after, so a coarse trial is not credited with epochs it had not yet run). (Comparing only trials
# of equal ``epochs`` would leave a sweep over epochs with few or no trials to compare.)
# Optuna's own warm-up counts steps, which are now percents, so it is built with none and the
# warm-up is applied here in epochs, as the user wrote it (:func:`may_prune`).
SCHEDULE_STEPS = 100


def schedule_step(epoch: int, epochs: int) -> int:
    """The Optuna step of a trial's ``epoch`` (numbered from 1) of ``epochs``: the percent of its
    own schedule done, 1 to :data:`SCHEDULE_STEPS` (0 before its first epoch)."""
    if epoch <= 0:
        return 0
    return min(SCHEDULE_STEPS, max(1, round(SCHEDULE_STEPS * epoch / epochs)))


def may_prune(epoch: int, epochs: int, warmup_epochs: int) -> bool:
    """Whether a trial may be pruned after ``epoch`` (numbered from 1, as the runs number them).

    ``n_warmup_steps`` = N spares epochs 1..N (Optuna's own rule, ``step < N``, spared only 1..N-1
    of our 1-based epochs). The last epoch is never pruned: the trial has spent its whole budget,
    and its result is a finished trial's, which Optuna should be told, not thrown away.
    """
    return warmup_epochs < epoch < epochs


def judge(trial, reported: dict[int, float], curve: dict[int, float], epochs: int, warmup_epochs: int,
          prune: bool = True) -> tuple[int, float] | None:
    """Report a trial's new epochs to Optuna (``trial``, an ``optuna.Trial``) in order, each at its
    :func:`schedule_step`, the percents between the previous epoch's and it carrying the previous
    epoch's value, asking the pruner after each epoch that :func:`may_prune` (never with ``prune``
    false: a finished trial's last epochs, reported so later trials meet it at every step; its
    steps after the last epoch's, none, since that is 100). ``reported``: the steps Optuna holds
    already. Returns (epoch, val top-1) where the pruner stops the trial, else None.

    A schedule of over 100 epochs has epochs that share a percent; those are judged once, at the
    first of them.
    """
    before: tuple[int, float] | None = None  # the previous epoch of the curve and its value
    for epoch, value in sorted(curve.items()):
        step = schedule_step(epoch, epochs)
        if step in reported:
            before = (step, value)
            continue
        if before is not None:
            for s in range(before[0] + 1, step):
                if s not in reported:
                    trial.report(before[1], s)
        trial.report(value, step)
        reported = {**reported, step: value}
        before = (step, value)
        if prune and may_prune(epoch, epochs, warmup_epochs) and trial.should_prune():
            return epoch, value
    if not prune:
        return None
    if curve:  # nothing new, but other trials' epochs may have moved the median
        epoch, value = max(curve.items())
        if may_prune(epoch, epochs, warmup_epochs) and trial.should_prune():
            return epoch, value
    return None


def pruner(cfg: dict[str, Any]):
    """The sweep's Optuna pruner, with no warm-up of its own: :func:`may_prune` applies the
    sweep's ``n_warmup_steps`` in epochs (steps are percents of a schedule, see above)."""
    import optuna

    p = cfg["pruner"]
    if p["type"] == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=p["n_startup_trials"], n_warmup_steps=0)
    if p["type"] == "threshold":
        return optuna.pruners.ThresholdPruner(lower=p["lower"], n_warmup_steps=0)
    return optuna.pruners.NopPruner()


def study(settings: Settings, cfg: dict[str, Any], asked: int = 0):
    """The sweep's study (created on first use). The sampler is seeded with (seed, trials asked so
    far) (:func:`server.sweeps.sampler_seed`): each call builds a fresh sampler, and the same seed
    every time would draw the same random start again."""
    import optuna

    sampler = optuna.samplers.TPESampler(seed=sampler_seed(cfg, asked), n_startup_trials=min(10, max(2, cfg["trials"] // 2)))
    return optuna.create_study(study_name=cfg["study"], storage=storage(settings.database_url), sampler=sampler,
                               pruner=pruner(cfg), direction="maximize", load_if_exists=True)


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------
def is_sweep(database: Database, job_id: int) -> bool:
    with database.session() as s:
        return s.scalar(select(Job.kind).where(Job.id == job_id)) == SWEEP


def start(celery, settings: Settings, database: Database, job_id: int) -> str:
    """The run task for a sweep: ``queued -> running`` (no lease, no slot held), one
    :func:`advance`, return. The rest happens on later calls of :func:`advance`."""
    with database.session() as s:
        job = s.get(Job, job_id)
        if not lifecycle.transition(s, job_id, QUEUED, RUNNING, where=(Job.attempt == job.attempt,),
                                    started_at=utcnow(), worker=worker_name(settings)):
            return "skipped"
    advance(celery, settings, database, job_id)
    return RUNNING


def advance_all(celery, settings: Settings, database: Database) -> list[int]:
    """Advance every running sweep (the reconciler's tick); returns those this caller advanced."""
    with database.session() as s:
        ids = list(s.scalars(select(Job.id).where(Job.kind == SWEEP, Job.state == RUNNING)))
    done = []
    for sweep_id in ids:
        try:
            if advance(celery, settings, database, sweep_id) is not None:
                done.append(sweep_id)
        except Exception:
            log.exception("sweep %s: advance failed", sweep_id)
    return done


def advance_parent(celery, settings: Settings, database: Database, job_id: int) -> None:
    """After a trial's run: advance its sweep at once (not only on the next reconciler tick)."""
    with database.session() as s:
        parent = s.scalar(select(Job.parent_id).where(Job.id == job_id))
        is_child = parent is not None and s.scalar(select(Job.kind).where(Job.id == parent)) == SWEEP
    if is_child:
        advance(celery, settings, database, parent)


def advance(celery, settings: Settings, database: Database, sweep_id: int) -> str | None:
    """One reconciliation of sweep ``sweep_id`` (see the module docstring). Returns the sweep's
    state after it, or None when another caller holds the sweep or it is not running.

    Whatever else goes wrong in a pass (Optuna refusing a stored value, a bug) ends the sweep
    ``failed`` with the error, its unfinished children cancelled (:meth:`Driver.abort`): a sweep
    that cannot advance would otherwise stay running, its trials holding their slots, and log the
    same traceback every tick. Only a database that cannot be reached is left to the next tick."""
    me = f"{worker_name(settings)}:{threading.get_ident()}"  # unique per caller: worker and thread
    with database.session() as s:
        stale = utcnow() - timedelta(seconds=MUTEX_S)
        took = s.execute(update(Job).where(Job.id == sweep_id, Job.kind == SWEEP, Job.state == RUNNING,
                                           or_(Job.lease_owner.is_(None), Job.heartbeat_at < stale))
                         .values(lease_owner=me, heartbeat_at=utcnow())
                         .execution_options(synchronize_session=False)).rowcount == 1
    if not took:
        return None
    try:
        with database.session() as s:
            return Driver(s, celery, settings, sweep_id).advance()
    except Exception as e:
        if database_unavailable(e):  # nothing can be recorded now; the next tick tries again
            raise
        log.exception("sweep %s: advance failed; the sweep fails", sweep_id)
        with database.session() as s:
            return Driver(s, celery, settings, sweep_id).abort(f"advancing the sweep failed: {type(e).__name__}: {e}")
    finally:
        with database.session() as s:
            s.execute(update(Job).where(Job.id == sweep_id, Job.lease_owner == me).values(lease_owner=None)
                      .execution_options(synchronize_session=False))


def uses_teacher(cfg: dict[str, Any]) -> bool:
    """Whether any trial distills (a sweep of distillation.type none only has no teacher to cache)."""
    types = cfg["search_space"].get("distillation_type", {}).get("choices", [cfg["base"]["distillation"]["type"]])
    return any(t != "none" for t in types)


def teacher_outputs_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The cache-filling job: the base config without a student, for as many epochs as the longest
    trial, storing what the most demanding loss in the search space needs (soft logits cover hard)."""
    base = cfg["base"]
    types = set(cfg["search_space"].get("distillation_type", {}).get("choices", [base["distillation"]["type"]]))
    epochs = cfg["search_space"].get("epochs")
    out = {k: v for k, v in base.items() if k not in ("student", "distillation")}
    out["kind"] = TEACHER_OUTPUTS
    out["train"] = dict(base["train"])
    if epochs:
        out["train"]["epochs"] = max(epochs.get("choices") or [epochs["high"]])
    out["distillation"] = {k: v for k, v in base["distillation"].items() if k not in ("alpha", "tau")}
    out["distillation"]["type"] = "soft" if "soft" in types else "hard"
    return out


class Driver:
    """One pass of :func:`advance` over one sweep (holds its session; lifecycle functions commit)."""

    def __init__(self, s: Session, celery, settings: Settings, sweep_id: int):
        self.s, self.celery, self.settings = s, celery, settings
        self.sweep = s.get(Job, sweep_id)
        self.cfg = self.sweep.config

    def advance(self) -> str:
        if self.sweep.cancel_requested:
            return self._cancel()
        prep = self.s.scalar(select(Job).where(Job.parent_id == self.sweep.id, Job.kind == TEACHER_OUTPUTS)
                             .order_by(Job.id).limit(1))
        if self.cfg.get("teacher_outputs", True) and uses_teacher(self.cfg):
            if prep is None:
                if not self._free_slots():
                    return self._store(phase=WAITING)
                self._create(TEACHER_OUTPUTS, f"{self.sweep.name[:170]}-teacher-outputs", teacher_outputs_config(self.cfg))
                return self._store(phase="teacher outputs")
            if prep.state in ACTIVE_STATES:
                return self._store(phase="teacher outputs")
            if prep.state != SUCCEEDED:
                return self._end(FAILED, f"its teacher_outputs job {prep.id} ended {prep.state}: {prep.error or 'no reason'}")
        st = study(self.settings, self.cfg)
        trials = {j.trial_number: j for j in trial_jobs(self.s, self.sweep.id)}
        frozen = {t.number: t for t in st.get_trials(deepcopy=False)}
        if not frozen:  # a new study: the trials the user wants first (we hold the sweep, so once)
            for params in self.cfg.get("first_trials") or []:
                st.enqueue_trial(params)
        for number, job in trials.items():
            if number in frozen:
                self._sync(st, frozen[number], job)
        self._recover_orphans(st, frozen, trials)
        waiting = not self._ask(trials)
        trials = {j.trial_number: j for j in trial_jobs(self.s, self.sweep.id)}
        if len(trials) >= self.cfg["trials"] and all(j.state in FINAL_STATES for j in trials.values()):
            won = [j for j in trials.values() if j.state == SUCCEEDED]
            if won:
                return self._end(SUCCEEDED)
            return self._end(FAILED, "no trial succeeded: " + ", ".join(f"trial {n} {j.state}"
                                                                        for n, j in sorted(trials.items())))
        return self._store(phase=WAITING if waiting else "trials")

    # -- trials -----------------------------------------------------------------------------------
    def _sync(self, st, ft, job: Job) -> None:
        """Tell Optuna a finished trial's outcome, or report a running one's epochs and prune it."""
        from optuna.trial import Trial, TrialState

        if ft.state.is_finished():
            return
        epochs, warmup = int(job.config["train"]["epochs"]), self.cfg["pruner"].get("n_warmup_steps", 0)
        if job.state == SUCCEEDED:
            top1 = (job.metrics or {}).get("val_top1")
            if isinstance(top1, (int, float)):
                judge(Trial(st, ft._trial_id), dict(ft.intermediate_values), self._val_top1(job), epochs, warmup, prune=False)
                st.tell(ft.number, float(top1))
            else:
                st.tell(ft.number, state=TrialState.FAIL)
        elif job.state == PRUNED:
            st.tell(ft.number, state=TrialState.PRUNED)
        elif job.state in (FAILED, CANCELLED):
            st.tell(ft.number, state=TrialState.FAIL)
        elif job.state == RUNNING and not job.cancel_requested:
            # Epochs are reported in order and the pruner asked after each, so a trial is stopped
            # at the first epoch the pruner rejects, however late this call comes.
            pruned_at = judge(Trial(st, ft._trial_id), dict(ft.intermediate_values), self._val_top1(job), epochs, warmup)
            if pruned_at is not None:
                reason = (f"{lifecycle.PRUNE_REASON} {self.sweep.id} ({self.cfg['pruner']['type']} pruner) at epoch "
                          f"{pruned_at[0]}: val top-1 {pruned_at[1]:.2f}%")
                if lifecycle.prune(self.s, job, reason):
                    log.info("sweep %s: trial %s (job %s) %s", self.sweep.id, ft.number, job.id, reason)

    def _val_top1(self, job: Job) -> dict[int, float]:
        rows = self.s.execute(select(MetricPoint.epoch, MetricPoint.value)
                              .where(MetricPoint.job_id == job.id, MetricPoint.attempt == job.attempt,
                                     MetricPoint.name == "val_top1").order_by(MetricPoint.id)).all()
        return {int(e): float(v) for e, v in rows if e}

    def _recover_orphans(self, st, frozen: dict[int, Any], trials: dict[int, Job]) -> None:
        """A trial Optuna handed out whose job was never created (the caller died in between); it
        waits, still running in Optuna, while the owner has no free slot."""
        from optuna.trial import TrialState

        for number, ft in frozen.items():
            if ft.state == TrialState.RUNNING and number not in trials:
                if len(trials) < self.cfg["trials"] and ft.params:
                    if self._free_slots():
                        trials[number] = self._create_trial(number, ft.params)
                else:
                    st.tell(number, state=TrialState.FAIL)

    def _ask(self, trials: dict[int, Job]) -> bool:
        """Start trials up to ``parallel`` in flight until ``trials`` exist, each only into a free
        slot of the owner's cap (``server.quotas``), counted under the owner's lock held until
        the trial's job is inserted. False when it stopped for want of a slot."""
        active = sum(1 for j in trials.values() if j.state in ACTIVE_STATES)
        while len(trials) < self.cfg["trials"] and active < self.cfg["parallel"]:
            if not self._free_slots():
                return False
            st = study(self.settings, self.cfg, asked=len(trials))
            t = st.ask(distributions(self.cfg["search_space"]))
            trials[t.number] = self._create_trial(t.number, t.params)
            active += 1
        return True

    def _free_slots(self) -> int:
        """The owner's free slots, the owner locked (``quotas.free_slots``) until the next commit:
        the job inserted next is counted under the same lock. None free: the lock is released."""
        self.s.commit()  # the lock opens its own transaction
        free = quotas.free_slots(self.s, self.settings, self.sweep.owner)
        if not free:
            self.s.commit()
        return free

    def _create_trial(self, number: int, params: dict[str, Any]) -> Job:
        cfg = apply_params(self.cfg["base"], params)
        job = self._create(DISTILL, f"{self.sweep.name[:170]}-trial-{number}", cfg, trial_number=number)
        log.info("sweep %s: trial %d is job %d %s", self.sweep.id, number, job.id, params)
        return job

    def _create(self, kind: str, name: str, cfg: dict[str, Any], trial_number: int | None = None) -> Job:
        owner = self.sweep.owner
        spec = JobSpec(kind, name, cfg, parent=ParentRef.existing(self.sweep.id), trial_number=trial_number,
                       priority=self.sweep.priority)  # children at the sweep's priority
        job = lifecycle.create_jobs(self.s, owner, [spec], self.settings)[0]  # counted again under the lock
        try:
            lifecycle.enqueue(self.s, self.celery, self.settings, job.id)
        except Exception:  # the broker is away: the reconciler re-sends queued jobs whose message was lost
            log.warning("sweep %s: could not queue job %s yet", self.sweep.id, job.id, exc_info=True)
        return job

    # -- the sweep --------------------------------------------------------------------------------
    def _cancel(self) -> str:
        self._stop_children()
        return self._end(CANCELLED, "cancelled by user")

    def abort(self, error: str) -> str | None:
        """End the sweep ``failed`` with ``error`` after a pass that raised: its unfinished children
        are cancelled (their slots freed) and the summary is left as the last good pass stored it
        (summarizing may be what failed). None if the sweep was no longer running."""
        self._stop_children()
        if not lifecycle.finish(self.s, self.sweep.id, FAILED, from_states=RUNNING, error=error):
            return None
        log.info("sweep %s %s: %s", self.sweep.id, FAILED, error)
        return FAILED

    def _stop_children(self) -> None:
        for child in list(self.s.scalars(select(Job).where(Job.parent_id == self.sweep.id, Job.state.in_(ACTIVE_STATES)))):
            try:
                lifecycle.cancel(self.s, self.celery, child, by=f"sweep {self.sweep.id}", settings=self.settings)
            except lifecycle.JobConflict:
                pass  # it ended meanwhile

    def _store(self, phase: str) -> str:
        summary = summarize(self.s, self.sweep)
        self.s.execute(update(Job).where(Job.id == self.sweep.id, Job.state == RUNNING).values(
            progress=self._progress(summary, phase), metrics=self._metrics(summary), updated_at=utcnow())
            .execution_options(synchronize_session=False))
        self.s.commit()
        return RUNNING

    def _progress(self, summary: dict[str, Any], phase: str) -> dict[str, Any]:
        return {"phase": phase, "fraction": round(summary["finished"] / max(1, self.cfg["trials"]), 4), "sweep": summary}

    @staticmethod
    def _metrics(summary: dict[str, Any]) -> dict[str, Any]:
        best = summary["best"]
        return {"val_top1": best["top1"]} if best else {}

    def _end(self, state: str, error: str | None = None) -> str:
        summary = summarize(self.s, self.sweep)
        self.s.execute(update(Job).where(Job.id == self.sweep.id, Job.state == RUNNING).values(
            progress={**self._progress(summary, "done"), "fraction": 1.0 if state == SUCCEEDED else
                      round(summary["finished"] / max(1, self.cfg["trials"]), 4)},
            metrics=self._metrics(summary)).execution_options(synchronize_session=False))
        self.s.commit()
        lifecycle.finish(self.s, self.sweep.id, state, from_states=RUNNING, error=error)
        log.info("sweep %s %s%s", self.sweep.id, state, f": {error}" if error else "")
        return state
