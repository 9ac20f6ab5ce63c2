"""Jobs: submit (its 201 carries ``warnings``), list, read, metrics, logs, cancel, retry.

Each handler is fetch-or-404 -> one call into :mod:`server.lifecycle` or :mod:`server.job_requests`
-> serialize. Their errors (``SubmissionError``, ``JobConflict``) become 4xx answers in
``server.api.init_app``.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from flask import g, jsonify, request
from sqlalchemy import select
from sqlalchemy.orm import joinedload, selectinload

from .. import job_requests, lifecycle, quotas, replicates, submission_warnings, submissions
from ..auth import login_required
from ..errors import ApiError
from ..models import Job, MetricPoint, waits_for_teacher
from ..serializers import serialize_job
from ..vocabulary import JOB_KINDS, JOB_STATES, QUEUED
from ..workers import live_capacity
from .base import arg_int, arg_name, celery, db, get_object_or_404, json_body, paginate, settings


@login_required
def create_job():
    body = json_body(submissions.JOB_BODY_KEYS, required={"kind", "name", "config"})
    s = db()
    specs = job_requests.validate_request(s, settings(), g.user, body)
    jobs = lifecycle.submit(s, celery(), settings(), g.user, specs)  # a broker outage leaves them queued
    asked = [j.id for j in jobs if j.baseline_of is None and j.replicate_of is None]  # not baseline twins nor seeds k > 0
    out = serialize_job(s.get(Job, asked[-1]))  # the job asked for (seed 0: the primary of a ``seeds: N`` group)
    if len(asked) > 1:
        out["pipeline"] = asked  # a baseline twin is in out["baseline"]
    replicates = [j.id for j in jobs if j.replicate_of is not None]
    if replicates:
        out["replicates"] = replicates  # the students of seeds 1..N-1 (each names its own baseline)
    # What in the config looks wrong for its data (deit_core.config_warnings): accepted, but said.
    primary = next(i for i, j in enumerate(jobs) if j.id == asked[-1])
    out["warnings"] = submission_warnings.for_specs(s, settings(), g.user, specs, primary) + unsent_warning(s, jobs)
    return jsonify(out), 201


def unsent_warning(s, jobs: list[Job]) -> list[dict[str, str]]:
    """A warning when the broker could not take some messages now: the jobs are queued all the same
    and the reconciler sends them once it is back (``lifecycle.send_or_leave_queued``). The rows are
    read again: the send time is written by an UPDATE the loaded objects do not see."""
    waiting = {j.id for j in jobs if waits_for_teacher(j)}
    unsent = [i for i in s.scalars(select(Job.id).where(Job.id.in_([j.id for j in jobs]), Job.state == QUEUED,
                                                        Job.enqueued_at.is_(None)).order_by(Job.id)) if i not in waiting]
    if not unsent:
        return []
    return [{"field": "queue", "message": f"the message queue is unavailable; job(s) {unsent} stay queued and are "
             "sent as soon as it is back (nothing to resubmit)"}]


def _filter(q, param: str, column, allowed: tuple[str, ...]):
    raw = request.args.get(param)
    if raw is None:
        return q
    values = raw.split(",")
    bad = [x for x in values if x not in allowed]
    if bad:
        raise ApiError(400, "invalid_parameter", f"unknown {param} {bad[0]!r}; one of {', '.join(allowed)}", param)
    return q.where(column.in_(values))


@login_required
def list_jobs():
    # Owners and artifacts come with the page (a join and one IN query); twins and replicates in two more
    # (replicates.relatives_of): a page of 200 jobs costs the queries of a page of 1 (tests/test_list_queries.py).
    q = select(Job).options(joinedload(Job.owner), selectinload(Job.artifacts)).order_by(Job.id.desc())
    if not g.user.is_admin:
        q = q.where(Job.owner_id == g.user.id)
    q = _filter(q, "state", Job.state, JOB_STATES)
    q = _filter(q, "kind", Job.kind, JOB_KINDS)
    capacity = live_capacity(db())  # once per page: why each queued job waits

    def prepare(rows):
        relatives = replicates.relatives_of(db(), rows)
        return lambda j: serialize_job(j, with_config=False, capacity=capacity, relatives=relatives)

    return jsonify(paginate(q, "jobs", None, Job.id, prepare=prepare))


@login_required
def get_job(job_id: int):
    return jsonify(serialize_job(get_object_or_404(Job, job_id)))


@login_required
def get_job_metrics(job_id: int):
    """Every series of the current attempt: ``{"series": {"loss": [{step, epoch, value, time}]}}``."""
    job = get_object_or_404(Job, job_id)
    q = select(MetricPoint).where(MetricPoint.job_id == job.id, MetricPoint.attempt == job.attempt)
    name = arg_name("name")
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


def _serialized(job_id: int):
    s = db()
    s.expire_all()
    return jsonify(serialize_job(s.get(Job, job_id))), 202


@login_required
def cancel_job(job_id: int):
    job = get_object_or_404(Job, job_id)
    lifecycle.cancel(db(), celery(), job, by=g.user.name, settings=settings())
    return _serialized(job.id)


@login_required
def retry_job(job_id: int):
    job = get_object_or_404(Job, job_id)
    quotas.reserve(db(), settings(), job.owner, 1)  # held until retry's commit puts it back in flight
    lifecycle.retry(db(), celery(), settings(), job)
    return _serialized(job.id)
