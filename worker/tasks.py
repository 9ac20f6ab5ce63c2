"""The Celery task the API sends by name (:data:`server.vocabulary.RUN_TASK`), and the reconciler
every worker process runs beside it (``worker.reconciler``): jobs whose worker or host died, and
queued jobs whose message was lost, are found from the database by any live worker."""
from __future__ import annotations

import logging
import threading

from celery import Celery
from celery.signals import worker_ready, worker_shutting_down

from server.db import Database
from server.settings import Settings
from server.vocabulary import LOCAL, RUN_TASK

from . import comparison, sweep, warm_start
from .lease import LocalLeases
from .reattach import SlurmReattach
from .reconciler import Reconciler
from .registry import Registry
from .runner import JobRunner
from .webhook_sender import WebhookSender

log = logging.getLogger(__name__)


def register(app: Celery) -> None:
    """Define the tasks on ``app`` (called by ``worker.app.make_worker_app``; imports stay side-effect free)."""
    databases: dict[str, Database] = {}

    def database(settings: Settings) -> Database:
        if settings.database_url not in databases:
            databases[settings.database_url] = Database(settings.database_url)
        return databases[settings.database_url]

    stopping = threading.Event()
    local = LocalLeases()  # leases this process holds: its own reconciler never judges them
    reconcilers: list[Reconciler] = []
    registries: list[Registry | WebhookSender] = []  # background threads stopped at shutdown

    def advance_sweep_of(job_id: int) -> None:
        """The one place a run consults its sweep (the runner's ``sweep_hook``): after each stored
        validation point of a trial (its pruner judges the epoch as it lands) and after the delivery
        ends (the sweep goes on now, not only at the next reconciler tick). A failure is logged; the
        reconciler advances the sweep later."""
        settings: Settings = app.distillery_settings
        try:
            sweep.advance_parent(app, settings, database(settings), job_id)
        except Exception:
            log.exception("job %s: advancing its sweep failed (the reconciler will)", job_id)

    def _on_shutdown(sender=None, **_kw) -> None:
        stopping.set()
        for r in reconcilers:
            r.stop()
        for g in registries:
            g.stop()

    def _on_ready(sender=None, **_kw) -> None:
        if reconcilers:
            return
        settings: Settings = app.distillery_settings
        if settings.launcher == LOCAL and settings.warm_start:
            warm_start.shared().start()  # it imports torch and the engine now, before the first job arrives
        reconciler = Reconciler(app, settings, database(settings), local,
                                reattach=SlurmReattach(app, settings, database(settings), local, stopping,
                                                       sweep_hook=advance_sweep_of))
        reconcilers.append(reconciler)
        reconciler.start()
        registry = Registry(settings, database(settings))  # the workers table: this worker's name, slots, queues
        registries.append(registry)
        registry.start()
        sender = WebhookSender(settings, database(settings))  # ended jobs -> their owners' webhooks
        registries.append(sender)
        sender.start()

    # Celery's warm shutdown (SIGTERM) only sets a flag and waits for the task; the supervisor
    # watches this event to stop its run and re-queue the job instead of blocking for hours.
    worker_shutting_down.connect(_on_shutdown, weak=False)
    worker_ready.connect(_on_ready, weak=False)

    def compare_group_of(job_id: int) -> None:
        """After a delivery ends: the gain over the baseline, once the job's replicate group is done
        (``worker.comparison``). A failure is logged; the reconciler fills a missing one later."""
        settings: Settings = app.distillery_settings
        try:
            comparison.update_after(database(settings), job_id)
        except Exception:
            log.exception("job %s: comparing its group with its baseline failed (the reconciler will)", job_id)

    @app.task(name=RUN_TASK, bind=True, ignore_result=True)
    def run_job(self, job_id: int) -> str:
        settings: Settings = self.app.distillery_settings
        if sweep.is_sweep(database(settings), int(job_id)):  # a sweep is no run (it holds no slot): claim, advance, return
            return sweep.start(self.app, settings, database(settings), int(job_id))
        try:
            return JobRunner(self.app, settings, database(settings), int(job_id), stopping, local,
                             sweep_hook=advance_sweep_of).run()
        finally:
            compare_group_of(int(job_id))

    app.distillery_database = database
    app.distillery_reconcilers = reconcilers
