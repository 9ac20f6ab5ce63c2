"""A sweep's trials and its promoted model (``kind: sweep``; see :mod:`server.sweeps`).

``GET /jobs/<sweep>/trials`` computes the table fresh from the trial jobs (``GET /jobs/<sweep>``
shows what the worker last stored). ``POST /jobs/<sweep>/promote`` records which trial's model the
team chose (by job id): a succeeded trial of this sweep with an exported ``.ptl``. The choice is
kept in the sweep's config (``promoted``), shown on the sweep page and in its summary, and the
CLI's ``sweep download --promoted`` fetches that model.
"""
from __future__ import annotations

import copy

from flask import g, jsonify
from sqlalchemy import update

from deit_core.config import whole_number
from deit_core.layout import MAX_INT32

from ..auth import login_required
from ..errors import ApiError
from ..lifecycle import JobConflict, iso_utc
from ..models import Job, utcnow
from ..sweeps import summarize
from ..vocabulary import MAX_ID, SUCCEEDED, SWEEP
from .base import db, get_object_or_404, json_body


def _sweep(sweep_id: int) -> Job:
    job = get_object_or_404(Job, sweep_id)
    if job.kind != SWEEP:
        raise ApiError(404, "not_found", f"job {sweep_id} is a {job.kind} job, not a sweep")
    return job


@login_required
def get_trials(sweep_id: int):
    sweep = _sweep(sweep_id)
    return jsonify({"sweep_id": sweep.id, "state": sweep.state, **summarize(db(), sweep)})


@login_required
def promote(sweep_id: int):
    sweep = _sweep(sweep_id)
    body = json_body({"job_id"}, required={"job_id"})
    trial_id = whole_number(body["job_id"])
    if trial_id is None or not 0 < trial_id <= MAX_ID:
        raise ApiError(400, "invalid_field", f"must be a trial's job id, got {body['job_id']!r}", "job_id")
    s = db()
    trial = s.get(Job, trial_id)
    if trial is None or trial.parent_id != sweep.id or trial.trial_number is None:  # the body is well formed: 409
        raise JobConflict(f"job {trial_id} is not a trial of sweep {sweep.id}", "job_id")
    if trial.state != SUCCEEDED or not any(a.format == "ptl" for a in trial.artifacts):
        raise JobConflict(f"trial job {trial_id} is {trial.state} without an exported .ptl; only a succeeded trial "
                          "can be promoted", "job_id")
    cfg = copy.deepcopy(sweep.config)
    cfg["promoted"] = {"job_id": trial.id, "trial_number": trial.trial_number, "by": g.user.name,
                       "at": iso_utc(utcnow())}
    s.execute(update(Job).where(Job.id == sweep.id).values(config=cfg).execution_options(synchronize_session=False))
    s.commit()
    s.expire_all()
    return jsonify({"sweep_id": sweep.id, "state": sweep.state, **summarize(s, s.get(Job, sweep.id))})


# ------------------------------------------------------------------------------------ openapi.json
JOB_PROPERTIES = {
    "trial_number": {"type": ["integer", "null"], "description": "a sweep's trial: its number in the sweep's study "
                                                                 "(parent_id is the sweep)"},
    "sweep_id": {"type": ["integer", "null"], "description": "the sweep this job is (kind sweep) or is a trial of; "
                                                             "GET /jobs/{sweep_id}/trials. null for any other job"},
    "sweep": {"type": ["object", "null"], "description": "kind sweep only: its summary as last stored (trials, best, "
                                                         "fronts, promoted); GET /jobs/{id}/trials computes it fresh"},
}


def openapi_parts(ref, json_response, err, sweep_id_param, max_trials: int) -> tuple[dict, dict, dict]:
    """What the OpenAPI document says about sweeps: (JobSubmit properties, schemas, paths), so the
    document (``server.api.openapi``) and the schemathesis fuzzer know the sweep body."""
    from ..sweeps import PARAMS, PRUNERS

    num = {"type": "number"}
    rng = {"type": "object", "additionalProperties": False, "required": ["low", "high"],
           "properties": {"low": num, "high": num, "log": {"type": "boolean"}, "step": {"type": ["number", "null"]}}}
    choices = {"type": "array", "minItems": 1, "maxItems": 50}
    param = {"anyOf": [choices, {"type": "object", "additionalProperties": False, "required": ["choices"],
                                 "properties": {"choices": choices}}, rng]}
    submit = {
        "search_space": {"type": "object", "minProperties": 1, "additionalProperties": False,
                         "properties": {name: param for name in PARAMS},
                         "description": "kind sweep only: what the trials vary. A list (or {choices}) or a range "
                                        "{low, high, log, step}; student_model and distillation_type take choices only"},
        "trials": {"type": "integer", "minimum": 1, "maximum": max_trials, "default": 8, "description": "sweep: trials in all"},
        "parallel": {"type": "integer", "minimum": 1, "maximum": max_trials, "default": 1,
                     "description": "sweep: trials queued or running at once (at most trials)"},
        "pruner": {"type": "object", "additionalProperties": False, "required": ["type"],
                   "description": "sweep: stops weak trials from their per-epoch val top-1 (they end 'pruned')",
                   "properties": {"type": {"type": "string", "enum": list(PRUNERS)},
                                  "n_startup_trials": {"type": "integer", "minimum": 0, "maximum": 100000},
                                  "n_warmup_steps": {"type": "integer", "minimum": 0, "maximum": 100000},
                                  "lower": {"type": "number", "minimum": 0, "maximum": 100}}},
        "seed": {"type": "integer", "minimum": 0, "maximum": MAX_INT32, "description": "sweep: the sampler's seed"},
        "teacher_outputs": {"type": "boolean", "default": True,
                            "description": "sweep: first fill the teacher-output cache with one teacher_outputs job"},
        "first_trials": {"type": "array", "items": {"type": "object"},
                         "description": "sweep: parameter values to try first (inside the search space)"},
    }
    trial = {"type": "object", "properties": {
        "number": {"type": "integer"}, "job_id": {"type": "integer"}, "state": {"type": "string"},
        "params": {"type": "object"}, "top1": {"type": ["number", "null"]}, "ptl_top1": {"type": ["number", "null"]},
        "latency_ms": {"type": ["number", "null"], "description": ".ptl p50 latency at batch 1, one thread"},
        "size_bytes": {"type": ["integer", "null"]}, "error": {"type": ["string", "null"]}}}
    schemas = {"SweepTrial": trial, "SweepSummary": {"type": "object", "properties": {
        "sweep_id": {"type": "integer"}, "state": {"type": "string"}, "trials": {"type": "array", "items": ref("SweepTrial")},
        "finished": {"type": "integer"}, "trials_requested": {"type": "integer"}, "counts": {"type": "object"},
        "best": {"type": ["object", "null"]}, "study": {"type": "string"},
        "fronts": {"type": "object", "description": "job ids on the accuracy-latency and accuracy-size Pareto fronts",
                   "properties": {"latency": {"type": "array", "items": {"type": "integer"}},
                                  "size": {"type": "array", "items": {"type": "integer"}}}},
        "promoted": {"type": ["object", "null"]}, "teacher_outputs_job": {"type": ["object", "null"]}}}}
    paths = {
        "/jobs/{sweep_id}/trials": {"get": {"summary": "A sweep's trials, best trial, fronts and promoted trial",
                                          "parameters": sweep_id_param,
                                          "responses": {"200": json_response(ref("SweepSummary")), **err(401, 404)}}},
        "/jobs/{sweep_id}/promote": {"post": {
            "summary": "Promote a succeeded trial's model as the sweep's choice", "parameters": sweep_id_param,
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["job_id"], "additionalProperties": False,
                "properties": {"job_id": {"type": "integer", "minimum": 1, "maximum": MAX_ID}}}}}},
            "responses": {"200": json_response(ref("SweepSummary")), **err(400, 401, 403, 404, 409, 413, 415)}}},
    }
    return submit, schemas, paths
