"""Jobs: submit, list, read, metrics, logs, cancel, retry."""
from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

from flask import current_app, g, jsonify, request
from sqlalchemy import select, update

from .. import jobs as service
from ..auth import login_required
from ..models import JOB_STATES, Job, MetricPoint
from ..serializers import serialize_job
from .base import ApiError, arg_int, db, get_object_or_404, json_body, paginate, settings

log = logging.getLogger(__name__)


def _celery():
    return current_app.extensions["distillery.celery"]


@login_required
def create_job():
    body = json_body(service.JOB_BODY_KEYS, required={"kind", "name", "config"})
    s = db()
    try:
        specs = service.validate_submission(s, settings(), g.user, body)
    except service.SubmissionError as e:
        raise ApiError(e.status, e.code, e.message, e.field) from None
    jobs = service.create_jobs(s, g.user, specs)
    for job in jobs:
        if service.ready_to_run(job):
            try:
                service.enqueue(s, _celery(), settings(), job.id)
            except Exception as e:  # broker down: the row exists, say so rather than hide it
                log.exception("job %s: could not queue", job.id)
                service.transition(s, job.id, "queued", "failed", error=f"could not queue: {e}")
                raise ApiError(503, "broker_unavailable", f"job {job.id} recorded but not queued: {e}") from None
    out = serialize_job(s.get(Job, jobs[-1].id))
    if len(jobs) > 1:
        out["pipeline"] = [j.id for j in jobs]
    return jsonify(out), 201


@login_required
def list_jobs():
    q = select(Job).order_by(Job.id.desc())
    if not g.user.is_admin:
        q = q.where(Job.owner_id == g.user.id)
    state = request.args.get("state")
    if state:
        states = state.split(",")
        bad = [x for x in states if x not in JOB_STATES]
        if bad:
            raise ApiError(400, "invalid_parameter", f"unknown state {bad[0]!r}; one of {', '.join(JOB_STATES)}", "state")
        q = q.where(Job.state.in_(states))
    kind = request.args.get("kind")
    if kind:
        if kind not in ("teacher", "distill"):
            raise ApiError(400, "invalid_parameter", "must be teacher or distill", "kind")
        q = q.where(Job.kind == kind)
    return jsonify(paginate(q, "jobs", lambda j: serialize_job(j, with_config=False), Job.id))


@login_required
def get_job(job_id: int):
    return jsonify(serialize_job(get_object_or_404(Job, job_id)))


@login_required
def get_job_metrics(job_id: int):
    """Every series of the current attempt: ``{"series": {"loss": [{step, epoch, value, time}]}}``."""
    job = get_object_or_404(Job, job_id)
    q = select(MetricPoint).where(MetricPoint.job_id == job.id, MetricPoint.attempt == job.attempt)
    name = request.args.get("name")
    if name:
        q = q.where(MetricPoint.name == name)
    series: dict[str, list] = defaultdict(list)
    for p in db().scalars(q.order_by(MetricPoint.id)):
        series[p.name].append({"step": p.step, "epoch": p.epoch, "value": p.value, "time": p.time})
    return jsonify({"job_id": job.id, "attempt": job.attempt, "series": series})


@login_required
def get_job_logs(job_id: int):
    """The last ``tail`` lines (default 200) of the run's log (launcher output + train.log)."""
    job = get_object_or_404(Job, job_id)
    tail = arg_int("tail", 200, 1, 10000)
    lines: list[str] = []
    if job.run_dir:
        path = Path(job.run_dir) / "output.log"
        if path.exists():
            with open(path, "rb") as f:
                f.seek(0, 2)
                f.seek(max(0, f.tell() - 512 * tail))
                lines = f.read().decode(errors="replace").splitlines()[-tail:]
    return jsonify({"job_id": job.id, "attempt": job.attempt, "lines": lines})


@login_required
def cancel_job(job_id: int):
    """Queued: cancelled at once (the message is revoked; a late delivery finds the state changed).
    Running/exporting: flag the row; the worker supervising it stops the process group."""
    job = get_object_or_404(Job, job_id)
    s = db()
    if service.transition(s, job.id, "queued", "cancelled", error="cancelled by " + g.user.name):
        if job.task_id:
            try:
                _celery().control.revoke(job.task_id)
            except Exception:  # revoke is an optimisation; the CAS already made the job a no-op
                log.warning("job %s: revoke of %s failed", job.id, job.task_id, exc_info=True)
        service.fail_children(s, job, "was cancelled", state="cancelled")
    elif s.execute(update(Job).where(Job.id == job.id, Job.state.in_(("running", "exporting")))
                   .values(cancel_requested=True)).rowcount == 1:  # also a CAS: the worker may have just claimed it
        s.commit()
    else:
        s.rollback()
        s.refresh(job)
        raise ApiError(409, "conflict", f"job {job.id} is {job.state}; only queued or running jobs can be cancelled", "state")
    s.expire_all()
    return jsonify(serialize_job(s.get(Job, job.id))), 202


@login_required
def retry_job(job_id: int):
    """Run a failed or cancelled job again as attempt N+1 (same id, new run directory that resumes from the last attempt's checkpoint)."""
    job = get_object_or_404(Job, job_id)
    s = db()
    if job.parent_id is not None and job.config.get("teacher", {}).get("checkpoint") is None:
        raise ApiError(409, "conflict", "its teacher job never produced a checkpoint; retry the teacher job", "parent_id")
    if not service.transition(s, job.id, ("failed", "cancelled"), "queued", attempt=job.attempt + 1, error=None,
                              progress={}, metrics={}, started_at=None, finished_at=None, worker=None, pid=None,
                              cancel_requested=False, run_dir=None):
        raise ApiError(409, "conflict", f"job {job.id} is {job.state}; only failed or cancelled jobs can be retried", "state")
    service.enqueue(s, _celery(), settings(), job.id)
    s.expire_all()
    return jsonify(serialize_job(s.get(Job, job.id))), 202
