"""The OpenAPI 3 document of ``/api/v1``, written by hand next to the handlers it describes."""
from __future__ import annotations

from typing import Any

from flask import current_app, jsonify

from deit_core import config_schema
from deit_core.layout import FINAL_DIR
from deit_core.presets import PRESET_NAMES

from ..quotas import MAX_CAP
from ..settings import Settings
from ..vocabulary import (
    ARTIFACT_FORMATS,
    DEFAULT_PRIORITY,
    DISTILL,
    DISTILLATION_TYPES,
    JOB_KINDS,
    JOB_STATES,
    LAUNCHERS,
    MAX_ID,
    MAX_SEEDS,
    PRIORITIES,
    SWEEP,
    TEACHER,
    TEACHER_OUTPUTS,
)
from . import datasets, sweeps, webhooks
from .base import NAME_PATTERN

MAX_OFFSET = 1_000_000_000
_NUM = {"type": ["number", "null"]}
# A job's ``baseline`` gain fields (deit_core.paired_stats.gain_fields, stored by worker.comparison).
_GAIN_PROPERTIES = {
    "gain": {**_NUM, "description": "top-1 points over the baseline: one seed's, or the mean over seeds"},
    "gain_ci95": {"type": ["array", "null"], "items": {"type": "number"}, "minItems": 2, "maxItems": 2,
                  "description": "95% interval of the gain: over val images (one seed) or over seeds (t-interval)"},
    "mcnemar_p": {**_NUM, "description": "exact McNemar p of one seed's pair (null across seeds: see per_seed)"},
    "n_images": {"type": ["integer", "null"]}, "significant": {"type": "boolean",
                                                               "description": "only across seeds whose interval excludes 0"},
    "ci_over": {"type": "string", "enum": ["images", "seeds"]}, "seeds": {"type": "integer"},
    "verdict": {"type": ["string", "null"], "description": "the sentence to show for the gain"},
    "per_seed": {"type": ["array", "null"], "items": {"type": "object"},
                 "description": "seed, student_job, baseline_job, gain, gain_ci95, mcnemar_p, b, c, n_images per seed"}}
STATUS_TEXT = {400: "Bad request (the field is named)", 401: "Missing, invalid, expired or revoked token",
               403: "Not allowed: an admin-only action or value (the field is named), or a cookie-authenticated change without X-CSRF-Token", 404: "Not found (or another user's)",
               405: "Method not allowed (see Allow)", 409: "Conflict with the current state", 410: "File gone from storage",
               413: "Body too large", 415: "Wrong Content-Type", 416: "Range not satisfiable",
               429: "Too many of your jobs queued or running, or too many invalid tokens from your address (see Retry-After)",
               503: "Broker unavailable"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def err(*codes: int) -> dict[str, Any]:
    """Every error status an operation can answer, each with the error body (405 for any operation; 429
    wherever a token is checked: past DISTILLERY_BAD_TOKEN_LIMIT an invalid one is a 429, not a 401)."""
    codes = {*codes, 405, *((429,) if 401 in codes else ())}
    return {str(c): {"description": STATUS_TEXT[c], "content": {"application/json": {"schema": _ref("Error")}}}
            for c in sorted(codes)}


ID = lambda name: {"name": name, "in": "path", "required": True,  # noqa: E731
                   "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID}}
USER = {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1, "maxLength": 120}}
PAGE = [{"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}},
        {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET, "default": 0}},
        {"name": "cursor", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
         "description": "keyset pagination: rows with id below this (the previous page's next_cursor)"}]


PRESET_PROP = {"type": "string", "enum": list(PRESET_NAMES),
               "description": "a preset's values (GET /presets) put under config, teacher_job.config and students[].config: "
                              "keys given explicitly win"}
PRESET = {"type": "object", "properties": {"name": {"type": "string"}, "label": {"type": "string"},
                                           "max_train_images": {"type": ["integer", "null"]}, "values": {"type": "object"}}}
WARNING = {"type": "object", "required": ["field", "message"],
           "properties": {"field": {"type": "string", "description": "the dotted config key, e.g. train.mixup"},
                          "message": {"type": "string"}}}


def job_config_schema(st: Settings) -> dict[str, Any]:
    """The engine's schema (deit_core.config), generated from its field declarations and cross-field
    rules, with the maxima this deployment lowers (DISTILLERY_MAX_*). Not expressible here, and answered
    400 naming the field: data paths, datasets, checkpoints and caches that do not exist for the caller,
    img_size not a multiple of the patch size, processes_per_node other than processes."""
    schema = config_schema.json_schema(st.config_caps(), kinds=JOB_KINDS)
    return {**schema,
            "description": "The engine's job schema (deit_core.config; docs/config.md); unknown keys are errors. "
                           + (job_config_schema.__doc__ or ""),
            "example": {"kind": "teacher", "data": {"train": "dataset:digits/train", "val": "dataset:digits/val", "img_size": 32},
                        "teacher": {"model": "regnety_002"},
                        "train": {"epochs": 1, "batch_size": 16, "aa": None, "mixup": 0, "cutmix": 0, "workers": 0}}}


def _absent(*keys: str) -> dict[str, Any]:
    return {"properties": {k: False for k in sorted(keys)}}  # JSON Schema ``false``: the key must be absent


def _kind_is(*kinds: str) -> dict[str, Any]:
    return {"required": ["kind"], "properties": {"kind": {"enum": list(kinds)}}}


def _config_at(path: tuple[str, str], schema: dict[str, Any]) -> dict[str, Any]:
    """A body whose ``config.<section>.<key>`` is present and matches ``schema``."""
    section, key = path
    return {"required": ["config"], "properties": {"config": {"required": [section], "properties": {
        section: {"required": [key], "properties": {key: schema}}}}}}


NO_STUDENT = {"properties": {"student": {"type": "null"}}}
TEACHER_ONLY = {"properties": {"student": {"type": "null"}, "distillation": {"type": "null"}}}  # a teacher's config


def config_kind(kind: str) -> dict[str, Any]:
    return {"properties": {"kind": {"const": kind}}}


def submit_rules(pipeline_outputs: dict[str, Any], sweep_flag: dict[str, Any], sweep_keys: set[str]) -> list[dict[str, Any]]:
    """The rules between JobSubmit's keys that ``server.submissions`` enforces (each a 400 naming the
    key), as ``if``/``then`` so a schema-valid body is one the server takes: a sweep takes its own keys
    and no pipeline; only a distill job takes teacher_job, students, a teacher_outputs object and
    baseline (with a teacher: distillation.type hard or soft); seeds > 1 only with baseline: true and
    without students/teacher_outputs."""
    pipeline_keys = ("teacher_job", "students", "teacher_outputs")
    return [
        {"if": _kind_is(SWEEP),
         "then": {**_absent("teacher_job", "students", "baseline", "seeds"), "required": ["search_space"]},
         "else": {"properties": {**_absent(*(sweep_keys - {"teacher_outputs"}))["properties"],
                                 "teacher_outputs": pipeline_outputs}}},
        {"if": _kind_is(SWEEP), "then": {"properties": {"teacher_outputs": sweep_flag}}},
        *({"if": _kind_is(kind), "then": {"properties": {"config": config_kind(DISTILL if kind == SWEEP else kind)}}}
          for kind in JOB_KINDS),  # config.kind, when given, is the body's (a sweep's config is its trials')
        {"properties": {"teacher_job": {"properties": {"config": config_kind(TEACHER)}},
                        "students": {"items": {"properties": {"config": config_kind(DISTILL)}}}}},
        {"if": _kind_is(*(k for k in JOB_KINDS if k not in (DISTILL, SWEEP))),  # baseline false and seeds 1 are no-ops
         "then": {"properties": {**_absent(*pipeline_keys)["properties"], "baseline": {"const": False}, "seeds": {"const": 1}}}},
        {"if": {"required": ["baseline"], "properties": {"baseline": {"const": True}}},
         "then": {"properties": {"config": {"properties": {"distillation": {
             "properties": {"type": {"enum": [t for t in DISTILLATION_TYPES if t != "none"]}}}}}}}},
        {"if": _kind_is(*(k for k in JOB_KINDS if k not in (DISTILL, SWEEP))),  # the engine: only a distill job has a
         "then": {"properties": {"config": NO_STUDENT}}},                          # student
        {"if": _kind_is(TEACHER), "then": {"properties": {"config": TEACHER_ONLY}}},
        {"properties": {"teacher_job": {"properties": {"config": TEACHER_ONLY}}}},
        {"if": _kind_is(TEACHER_OUTPUTS), "then": {"not": _config_at(("distillation", "type"), {"const": "none"})}},
        {"if": {"allOf": [_kind_is(DISTILL, SWEEP, TEACHER_OUTPUTS), {"not": {"required": ["teacher_job"]}}, {"not": _config_at(
            ("distillation", "type"), {"const": "none"})}]},  # a run with a teacher names its checkpoint...
         "then": _config_at(("teacher", "checkpoint"), {"not": {"type": "null"}})},
        {"if": {"required": ["teacher_job"]},  # ...unless teacher_job trains it first
         "then": {"properties": {"config": {"properties": {"teacher": {"properties": {"checkpoint": {"type": "null"}}}}}}}},
        {"if": _kind_is(SWEEP), "then": _config_at(("teacher", "checkpoint"), {"not": {"type": "null"}})},
        {"if": {"required": ["seeds"], "properties": {"seeds": {"minimum": 2}}},
         "then": {"required": ["baseline"], "properties": {"baseline": {"const": True}, "students": False,
                                                           "teacher_outputs": False}}},
    ]


def _page(key: str, item: str) -> dict[str, Any]:
    return {"type": "object", "required": [key, "total"], "properties": {
        key: {"type": "array", "items": _ref(item)}, "total": {"type": "integer"},
        "limit": {"type": "integer"}, "offset": {"type": "integer"},
        "next_offset": {"type": ["integer", "null"]}, "next_cursor": {"type": ["integer", "null"]}}}


def build_openapi(st: Settings | None = None) -> dict[str, Any]:
    st = st or Settings()
    nullable_int = {"type": ["integer", "null"]}
    schemas = {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {
            "type": "object", "required": ["code", "message", "field"], "properties": {
                "code": {"type": "string"}, "message": {"type": "string"},
                "field": {"type": ["string", "null"], "description": "dotted path of the offending key, e.g. config.train.batch_size"},
                "errors": {"type": "array", "description": "every problem when there were several (a config is checked whole); "
                           "field/message are the first one's",
                           "items": {"type": "object", "required": ["field", "message"], "properties": {
                               "field": {"type": ["string", "null"]}, "message": {"type": "string"}}}}}}}},
        "JobConfig": job_config_schema(st),
        "StoredConfig": {"type": "object", "description": "The job's config as validated (paths resolved). To anyone but "
                         "an admin, server paths read as dataset:NAME/... (their own datasets) or <storage>/..."},
        "Token": {"type": "object", "required": ["id", "user", "active"], "properties": {
            "id": {"type": "integer"}, "user": {"type": "string"}, "name": {"type": ["string", "null"]},
            "created_at": {"type": ["string", "null"]}, "last_used_at": {"type": ["string", "null"]},
            "expires_at": {"type": ["string", "null"]}, "revoked_at": {"type": ["string", "null"]}, "active": {"type": "boolean"}}},
        "JobSubmit": {"type": "object", "required": ["kind", "name", "config"], "additionalProperties": False,
                      "example": {"kind": "teacher", "name": "digits-teacher", "config": job_config_schema(st)["example"]},
                      "properties": {
            "kind": {"type": "string", "enum": list(JOB_KINDS)},
            "name": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "\\S"},
            "config": _ref("JobConfig"),
            "teacher_job": {"type": "object", "additionalProperties": False, "required": ["config"],
                            "description": "Pipeline: train this teacher first (kind teacher), then run this distill job from its "
                                           "checkpoint. The response is the distill job with parent_id = the teacher job's id and "
                                           "'pipeline': [teacher_id, distill_id].",
                            "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "\\S"},
                                           "config": _ref("JobConfig")}},
            "priority": {"type": "string", "enum": list(PRIORITIES), "default": DEFAULT_PRIORITY,
                         "description": "the broker hands out higher first; only admins may submit high (else 403)"},
            "teacher_outputs": {"type": "object", "additionalProperties": False,
                                "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "\\S"}},
                                "description": "distill: put a teacher_outputs job (the first student's config without the "
                                               "student, epochs = the most any student asks for) between the teacher and the "
                                               "students; every student waits for it and reads its cache. Students must share "
                                               "its key fields (400 names the first that differs)"},
            "students": {"type": "array", "maxItems": 16, "description": "distill: more students of the same teacher job "
                         "(and teacher_outputs job); created before the first student, all listed in 'pipeline'",
                         "items": {"type": "object", "additionalProperties": False, "required": ["config"], "properties": {
                             "name": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "\\S"},
                             "config": _ref("JobConfig")}}},
            "baseline": {"type": "boolean", "description": "distill only: also train the same student config, seed and "
                                                           "budget with distillation.type none (job NAME-baseline, "
                                                           "baseline_of = this job); the response's 'baseline' names it"},
            "preset": PRESET_PROP,
            "seeds": {"type": "integer", "minimum": 1, "maximum": MAX_SEEDS, "default": 1,
                      "description": "with baseline: true only: N students and N baselines, seeds train.seed + 0..N-1 (jobs "
                                     "NAME-seedK, replicate_of = this job); the gain's interval is then over seeds. Not with "
                                     "teacher_outputs/students. The response lists the students of seeds 1..N-1 in 'replicates'"}}},
        "Progress": {"type": "object", "properties": {k: nullable_int for k in ("epoch", "epochs", "step", "steps_per_epoch")}
                     | {"fraction": {"type": "number"}, "eta_s": {"type": ["number", "null"]},
                        "phase": {"type": ["string", "null"], "description": "what the run is doing before/around its steps"},
                        "num_classes": nullable_int}},
        "Artifact": {"type": "object", "properties": {
            "id": {"type": "integer"}, "job_id": {"type": "integer"}, "kind": {"type": "string", "enum": ["checkpoint", "mobile", "server", "metadata", "report", "cache"]},
            "name": {"type": ["string", "null"], "description": "a teacher-output cache's name (distillation.teacher_cache)"},
            "format": {"type": "string", "enum": list(ARTIFACT_FORMATS)}, "size": {"type": "integer"}, "sha256": {"type": "string"},
            "filename": {"type": "string"}, "metadata": {"type": "object"}, "created_at": {"type": "string", "format": "date-time"},
            "download_url": {"type": "string"}}},
        "Job": {"type": "object", "required": ["id", "kind", "name", "state", "attempt", "progress", "metrics", "artifacts"], "properties": {
            "id": {"type": "integer"}, "kind": {"type": "string", "enum": list(JOB_KINDS)}, "name": {"type": "string"},
            "state": {"type": "string", "enum": list(JOB_STATES)}, "attempt": {"type": "integer"}, "parent_id": nullable_int,
            "owner": {"type": "string"}, "created_at": {"type": "string"}, "started_at": {"type": ["string", "null"]},
            "finished_at": {"type": ["string", "null"]}, "updated_at": {"type": "string"}, "error": {"type": ["string", "null"]},
            "cancel_requested": {"type": "boolean"},
            "stop_reason": {"type": ["string", "null"], "description": "why it stopped or was asked to stop (server.vocabulary.STOP_REASONS)"},
            "worker": {"type": ["string", "null"], "description": "the name of the worker running it (DISTILLERY_WORKER_NAME)"},
            "priority": {"type": "string", "enum": list(PRIORITIES)},
            "waiting_reason": {"type": ["string", "null"], "description": "a queued job: why it has not started (its teacher job, "
                               "no live worker with enough GPUs or CPU slots, or all such workers busy); null otherwise"},
            "launcher": {"type": "object", "description": "how the attempt was started; job_id: its Slurm job id",
                         "properties": {"kind": {"type": "string", "enum": list(LAUNCHERS)},
                                        "job_id": {"type": ["string", "null"]}}},
            "max_attempts": {"type": "integer", "description": "runs the service starts on its own (resources.max_attempts)"},
            "attempt_history": {"type": "array", "items": _ref("AttemptRecord"), "description": "every ended attempt, oldest first"},
            "lease": {"type": ["object", "null"], "description": "the running attempt's lease (null when none is held)",
                      "properties": {"owner": {"type": "string"}, "expires_at": {"type": "string", "format": "date-time"},
                                     "heartbeat_at": {"type": ["string", "null"], "format": "date-time"}}},
            "ship_card": {"type": ["object", "null"], "description": "detail view of a distill job that is not a baseline: "
                          "teacher, student and baseline rows (top-1 with its 95% interval, the .ptl's latency p50/p10/p90 "
                          "and size; int8_vs_fp32: the .ptl's speed-up over the fp32 model in the Lite Interpreter and over fp32 eager, "
                          "each with its range over both spreads), the CPU (model, ISA, threads, torch) the latencies were "
                          "measured on, and the sentence that says what to ship "
                          "(server/ship_card.py)",
                          "properties": {"rows": {"type": "array", "items": {"type": "object"}},
                                         "cpu": {"type": ["object", "null"]}, "sentence": {"type": "string"}}},
            "progress": _ref("Progress"), "metrics": {"type": "object", "additionalProperties": {"type": ["number", "null"]}},
            "artifacts": {"type": "array", "items": _ref("Artifact")}, "config": _ref("StoredConfig"),
            "top1": {"type": ["number", "null"], "description": "val top-1 of the exported checkpoint (top1_checkpoint)"},
            "top1_checkpoint": {"type": "string", "enum": [FINAL_DIR]}, "chance_top1": {"type": ["number", "null"]},
            "at_chance": {"type": "boolean", "description": "succeeded with a top-1 within 1.5x of guessing"},
            "baseline_of": nullable_int,
            "seeds": {"type": "integer", "description": "training seeds of its baseline group (1 unless submitted with seeds: N)"},
            "replicate_of": {**nullable_int, "description": "seed k > 0 of a seeds: N group: its primary job"},
            "baseline": {"type": ["object", "null"], "description": "a distill job's baseline twin (seed 0's) and the paired gain "
                         "over the baselines, null fields until every run of the group ended (then 'pending' is null or says why not)",
                         "properties": {"job_id": {"type": "integer"}, "state": {"type": "string"},
                                        "top1": {"type": ["number", "null"]}, **_GAIN_PROPERTIES,
                                        "ptl": {"type": ["object", "null"], "properties": _GAIN_PROPERTIES,
                                                "description": "the same, from the exported .ptl models' predictions"},
                                        "pending": {"type": ["string", "null"], "description": "why there is no gain (yet)"}}},
            "replicates": {"type": "array", "items": {"type": "integer"}, "description": "only in a seeds: N POST response"},
            "pipeline": {"type": "array", "items": {"type": "integer"}, "description": "only in a pipeline's POST response"},
            "warnings": {"type": "array", "items": _ref("Warning"), "description": "only in the POST response: what in the "
                         "config looks wrong for its data (accepted all the same)"}}},
        "Warning": WARNING,
        "AttemptRecord": {"type": "object", "properties": {
            "attempt": {"type": "integer"}, "worker": {"type": ["string", "null"]},
            "started_at": {"type": ["string", "null"]}, "ended_at": {"type": "string"},
            "outcome": {"type": "string", "description": "succeeded, failed, cancelled, lease_expired or worker_stopped"},
            "reason": {"type": ["string", "null"]},
            "then": {"type": "string", "enum": ["restarted", "retried", "handed_back"], "description": "how the next attempt began"}}},
        "UserLimits": {"type": "object", "required": ["user", "max_jobs_in_flight", "effective_max_jobs_in_flight"], "properties": {
            "user": {"type": "string"}, "max_jobs_in_flight": nullable_int,
            "effective_max_jobs_in_flight": {"type": "integer", "description": "the user's cap, else the server's"},
            "default_max_jobs_in_flight": {"type": "integer"}, "jobs_in_flight": {"type": "integer"}}},
        "Dataset": {"type": "object", "properties": {
            "id": {"type": "integer"}, "name": {"type": "string"}, "source": {"type": "string", "enum": ["path", "upload"]},
            "path": {"type": "string", "description": "the server folder to admins; dataset:NAME to its owner"},
            "train": {"type": "string", "description": "what data.train may name: dataset:NAME/train (the server path to admins)"},
            "val": {"type": "string", "description": "likewise dataset:NAME/val"}, "num_classes": {"type": "integer"},
            "num_train": {"type": "integer"}, "num_val": {"type": "integer"}, "owner": {"type": "string"}, "created_at": {"type": "string"}}},
    }
    job_id, art_id = [ID("job_id")], [ID("artifact_id")]
    dataset_name = {"type": "string", "pattern": datasets.NAME_PATTERN}
    paths = {
        "/jobs": {
            "post": {"summary": "Submit a job (or a teacher->distill pipeline)", "requestBody": {"required": True, "content": {
                "application/json": {"schema": _ref("JobSubmit")}}},
                "responses": {"201": _json(_ref("Job"), "Created"), **err(400, 401, 403, 413, 415, 429, 503)}},
            "get": {"summary": "List jobs (newest first)", "parameters": PAGE + [
                {"name": "state", "in": "query", "description": "one state or a comma list",
                 "schema": {"type": "string", "pattern": f"^({'|'.join(JOB_STATES)})(,({'|'.join(JOB_STATES)}))*$"}},
                {"name": "kind", "in": "query", "schema": {"type": "string", "enum": list(JOB_KINDS)}}],
                "responses": {"200": _json(_page("jobs", "Job")), **err(400, 401)}}},
        "/jobs/{job_id}": {"get": {"summary": "One job", "parameters": job_id, "responses": {"200": _json(_ref("Job")), **err(401, 404)}}},
        "/jobs/{job_id}/metrics": {"get": {"summary": "Metric series of the current attempt", "parameters": job_id + [
            {"name": "name", "in": "query", "schema": {"type": "string", "pattern": NAME_PATTERN}}],
            "responses": {"200": _json({"type": "object", "properties": {
                "job_id": {"type": "integer"}, "attempt": {"type": "integer"}, "series": {"type": "object", "additionalProperties": {
                    "type": "array", "items": {"type": "object", "properties": {"step": {"type": "integer"}, "epoch": {"type": "integer"},
                                                                               "value": {"type": ["number", "null"]},
                                                                               "time": {"type": ["number", "null"]}}}}}}}),
                **err(400, 401, 404)}}},
        "/jobs/{job_id}/logs": {"get": {"summary": "Log tail", "parameters": job_id + [
            {"name": "tail", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 200}}],
            "responses": {"200": _json({"type": "object", "properties": {
                "job_id": {"type": "integer"}, "attempt": {"type": "integer"}, "lines": {"type": "array", "items": {"type": "string"}}}}),
                **err(400, 401, 404)}}},
        "/jobs/{job_id}/cancel": {"post": {"summary": "Cancel queued or running work", "parameters": job_id,
                                           "responses": {"202": _json(_ref("Job"), "Accepted"), **err(401, 403, 404, 409)}}},
        "/jobs/{job_id}/retry": {"post": {"summary": "Run a failed or cancelled job again (attempt + 1)", "parameters": job_id,
                                          "responses": {"202": _json(_ref("Job"), "Accepted"), **err(401, 403, 404, 409, 429, 503)}}},
        "/artifacts": {"get": {"summary": "Artifact registry", "parameters": PAGE + [
            {"name": "format", "in": "query", "schema": {"type": "string", "enum": list(ARTIFACT_FORMATS)}},
            {"name": "job_id", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID}}],
            "responses": {"200": _json(_page("artifacts", "Artifact")), **err(400, 401)}}},
        "/artifacts/{artifact_id}": {"get": {"summary": "One artifact", "parameters": art_id,
                                             "responses": {"200": _json(_ref("Artifact")), **err(401, 404)}}},
        "/artifacts/{artifact_id}/download": {"get": {"summary": "Download (ETag = sha256; If-None-Match and Range honoured)", "parameters": art_id,
                                                      "responses": {"200": {"description": "the file", "headers": {
                                                          "ETag": {"schema": {"type": "string"}}, "Content-Length": {"schema": {"type": "integer"}}},
                                                          "content": {"application/octet-stream": {}}},
                                                      "206": {"description": "Part of the file (Range)", "content": {"application/octet-stream": {}}},
                                                      "304": {"description": "Not modified"}, **err(401, 404, 410, 416)}}},
        "/datasets": {
            "post": {"summary": "Register a server ImageFolder (JSON) or upload a .zip/.tar.gz (multipart: name, file)", "requestBody": {
                "required": True, "content": {
                    "application/json": {"schema": {"type": "object", "required": ["name", "path"], "additionalProperties": False,
                                                    "properties": {"name": dataset_name,
                                                                   "path": {"type": "string", "minLength": 1, "maxLength": 4096}}}},
                    "multipart/form-data": {"schema": {"type": "object", "required": ["name", "file"], "additionalProperties": False,
                                                       "properties": {"name": dataset_name,
                                                                      "file": {"type": "string", "format": "binary"}}}}}},
                "responses": {"201": _json(_ref("Dataset"), "Created"), **err(400, 401, 403, 409, 413, 415)}},
            "get": {"summary": "List datasets", "parameters": PAGE, "responses": {"200": _json(_page("datasets", "Dataset")), **err(400, 401)}}},
        "/datasets/{dataset_id}": {"get": {"summary": "One dataset", "parameters": [ID("dataset_id")],
                                           "responses": {"200": _json(_ref("Dataset")), **err(401, 404)}}},
        "/users/{name}/limits": {
            "get": {"summary": "A user's limits (yours; an admin: anyone's)", "parameters": [USER],
                    "responses": {"200": _json(_ref("UserLimits")), **err(401, 403, 404)}},
            "put": {"summary": "Set a user's cap on jobs queued or running at once (admins only; null: the server's default)",
                    "parameters": [USER], "requestBody": {"required": True, "content": {"application/json": {"schema": {
                        "type": "object", "required": ["max_jobs_in_flight"], "additionalProperties": False,
                        "properties": {"max_jobs_in_flight": {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_CAP}}}}}},
                    "responses": {"200": _json(_ref("UserLimits")), **err(400, 401, 403, 404, 413, 415)}}},
        "/tokens": {"get": {"summary": "API tokens (yours; an admin's: everyone's), never their secrets", "parameters": PAGE + [
            {"name": "user", "in": "query", "schema": {"type": "string", "pattern": NAME_PATTERN},
             "description": "admins: one user's tokens"}],
            "responses": {"200": _json(_page("tokens", "Token")), **err(400, 401)}}},
        "/tokens/{token_id}": {"delete": {"summary": "Revoke a token (yours; an admin: any)", "parameters": [ID("token_id")],
                                          "responses": {"200": _json(_ref("Token"), "Revoked"), **err(401, 403, 404)}}},
        "/presets": {"get": {"summary": "The presets a body's 'preset' names (deit_core.presets): dotted config values by "
                                        "training-set size", "responses": {"200": _json({"type": "object", "properties": {
                                            "presets": {"type": "array", "items": PRESET}}}), **err(401)}}},
        "/warnings": {"post": {"summary": "What a config being edited looks wrong for, given its data (the 201's 'warnings')",
                               "requestBody": {"required": True, "content": {"application/json": {"schema": {
                                   "type": "object", "required": ["config"], "additionalProperties": False, "properties": {
                                       "kind": {"type": "string", "enum": list(JOB_KINDS)}, "config": {"type": "object"},
                                       "preset": PRESET_PROP}}}}},
                               "responses": {"200": _json({"type": "object", "properties": {
                                   "warnings": {"type": "array", "items": _ref("Warning")}}}), **err(400, 401, 413, 415)}}},
        "/health": {"get": {"summary": "Liveness with database and broker checks", "security": [], "responses": {
            "200": _json({"type": "object"}), "503": _json({"type": "object"}, "Degraded"), **err()}}},
        "/openapi.json": {"get": {"summary": "This document", "security": [], "responses": {"200": _json({"type": "object"}), **err()}}},
    }
    submit, sweep_schemas, sweep_paths = sweeps.openapi_parts(_ref, _json, err, [ID("sweep_id")], st.sweep_max_trials)
    sweep_flag = submit.pop("teacher_outputs", {"type": "boolean"})
    props = schemas["JobSubmit"]["properties"]
    props["teacher_outputs"] = {"anyOf": [props["teacher_outputs"], sweep_flag]}  # a distill pipeline's object | a sweep's flag
    schemas["JobSubmit"]["properties"].update(submit)
    schemas["JobSubmit"]["allOf"] = submit_rules(props["teacher_outputs"]["anyOf"][0], sweep_flag, set(submit))
    schemas.update(sweep_schemas)
    schemas["Job"]["properties"].update(sweeps.JOB_PROPERTIES)
    paths.update(sweep_paths)
    hook_schemas, hook_paths = webhooks.openapi_parts(_ref, _json, err, ID, _page)
    schemas.update(hook_schemas)
    paths.update(hook_paths)
    return {
        "openapi": "3.1.0",
        "info": {"title": "distillery", "version": "1", "description": "Train compact DeiT students distilled from RegNetY teachers, "
                 "export int8 .ptl. Errors are {\"error\": {\"code\", \"message\", \"field\"}}."},
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {"schemas": schemas,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "distillery token create --user NAME"}},
                       "responses": {}},
    }


def openapi_json():
    return jsonify(build_openapi(current_app.extensions["distillery.settings"]))
