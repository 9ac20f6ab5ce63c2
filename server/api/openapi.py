"""The OpenAPI 3 document of ``/api/v1``, written by hand next to the handlers it describes."""
from __future__ import annotations

from typing import Any

from flask import jsonify

from ..models import ARTIFACT_FORMATS, JOB_STATES


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ERR = {"4XX": {"$ref": "#/components/responses/Error"}}
ID = lambda name: {"name": name, "in": "path", "required": True, "schema": {"type": "integer"}}  # noqa: E731
PAGE = [{"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}},
        {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "default": 0}},
        {"name": "cursor", "in": "query", "schema": {"type": "integer", "minimum": 1},
         "description": "keyset pagination: rows with id below this (the previous page's next_cursor)"}]


def _page(key: str, item: str) -> dict[str, Any]:
    return {"type": "object", "required": [key, "total"], "properties": {
        key: {"type": "array", "items": _ref(item)}, "total": {"type": "integer"},
        "limit": {"type": "integer"}, "offset": {"type": "integer"},
        "next_offset": {"type": ["integer", "null"]}, "next_cursor": {"type": ["integer", "null"]}}}


def build_openapi() -> dict[str, Any]:
    nullable_int = {"type": ["integer", "null"]}
    schemas = {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {
            "type": "object", "required": ["code", "message", "field"], "properties": {
                "code": {"type": "string"}, "message": {"type": "string"},
                "field": {"type": ["string", "null"], "description": "dotted path of the offending key, e.g. config.train.batch_size"}}}}},
        "JobConfig": {"type": "object", "description": "The engine's job schema (deit_core.config): kind, data, student, teacher, "
                      "distillation, train, resources. Unknown keys are errors. data.train/data.val are server paths under an allowed "
                      "root or a registered dataset, or 'dataset:NAME/train'. teacher.checkpoint: artifact id (int), server path, 'timm', "
                      "or null (teacher jobs, or a distill job with teacher_job).", "additionalProperties": True},
        "JobSubmit": {"type": "object", "required": ["kind", "name", "config"], "additionalProperties": False, "properties": {
            "kind": {"type": "string", "enum": ["teacher", "distill"]}, "name": {"type": "string", "maxLength": 200},
            "config": _ref("JobConfig"),
            "teacher_job": {"type": "object", "additionalProperties": False, "required": ["config"],
                            "description": "Pipeline: train this teacher first (kind teacher), then run this distill job from its "
                                           "checkpoint. The response is the distill job with parent_id = the teacher job's id and "
                                           "'pipeline': [teacher_id, distill_id].",
                            "properties": {"name": {"type": "string"}, "config": _ref("JobConfig")}}}},
        "Progress": {"type": "object", "properties": {k: nullable_int for k in ("epoch", "epochs", "step", "steps_per_epoch")}
                     | {"fraction": {"type": "number"}, "eta_s": {"type": ["number", "null"]}}},
        "Artifact": {"type": "object", "properties": {
            "id": {"type": "integer"}, "job_id": {"type": "integer"}, "kind": {"type": "string", "enum": ["checkpoint", "mobile", "server", "metadata", "report"]},
            "format": {"type": "string", "enum": list(ARTIFACT_FORMATS)}, "size": {"type": "integer"}, "sha256": {"type": "string"},
            "filename": {"type": "string"}, "metadata": {"type": "object"}, "created_at": {"type": "string", "format": "date-time"},
            "download_url": {"type": "string"}}},
        "Job": {"type": "object", "required": ["id", "kind", "name", "state", "attempt", "progress", "metrics", "artifacts"], "properties": {
            "id": {"type": "integer"}, "kind": {"type": "string", "enum": ["teacher", "distill"]}, "name": {"type": "string"},
            "state": {"type": "string", "enum": list(JOB_STATES)}, "attempt": {"type": "integer"}, "parent_id": nullable_int,
            "owner": {"type": "string"}, "created_at": {"type": "string"}, "started_at": {"type": ["string", "null"]},
            "finished_at": {"type": ["string", "null"]}, "updated_at": {"type": "string"}, "error": {"type": ["string", "null"]},
            "cancel_requested": {"type": "boolean"}, "worker": {"type": ["string", "null"]},
            "progress": _ref("Progress"), "metrics": {"type": "object", "additionalProperties": {"type": "number"}},
            "artifacts": {"type": "array", "items": _ref("Artifact")}, "config": _ref("JobConfig"),
            "pipeline": {"type": "array", "items": {"type": "integer"}, "description": "only in a pipeline's POST response"}}},
        "Dataset": {"type": "object", "properties": {
            "id": {"type": "integer"}, "name": {"type": "string"}, "source": {"type": "string", "enum": ["path", "upload"]},
            "path": {"type": "string"}, "train": {"type": "string"}, "val": {"type": "string"}, "num_classes": {"type": "integer"},
            "num_train": {"type": "integer"}, "num_val": {"type": "integer"}, "owner": {"type": "string"}, "created_at": {"type": "string"}}},
    }
    job_id, art_id = [ID("job_id")], [ID("artifact_id")]
    paths = {
        "/jobs": {
            "post": {"summary": "Submit a job (or a teacher->distill pipeline)", "requestBody": {"required": True, "content": {
                "application/json": {"schema": _ref("JobSubmit")}}}, "responses": {"201": _json(_ref("Job"), "Created"), **ERR}},
            "get": {"summary": "List jobs (newest first)", "parameters": PAGE + [
                {"name": "state", "in": "query", "schema": {"type": "string"}, "description": "one state or a comma list"},
                {"name": "kind", "in": "query", "schema": {"type": "string", "enum": ["teacher", "distill"]}}],
                "responses": {"200": _json(_page("jobs", "Job")), **ERR}}},
        "/jobs/{job_id}": {"get": {"summary": "One job", "parameters": job_id, "responses": {"200": _json(_ref("Job")), **ERR}}},
        "/jobs/{job_id}/metrics": {"get": {"summary": "Metric series of the current attempt", "parameters": job_id + [
            {"name": "name", "in": "query", "schema": {"type": "string"}}], "responses": {"200": _json({"type": "object", "properties": {
                "job_id": {"type": "integer"}, "attempt": {"type": "integer"}, "series": {"type": "object", "additionalProperties": {
                    "type": "array", "items": {"type": "object", "properties": {"step": {"type": "integer"}, "epoch": {"type": "integer"},
                                                                               "value": {"type": "number"}, "time": {"type": ["number", "null"]}}}}}}}), **ERR}}},
        "/jobs/{job_id}/logs": {"get": {"summary": "Log tail", "parameters": job_id + [
            {"name": "tail", "in": "query", "schema": {"type": "integer", "default": 200}}], "responses": {"200": _json({"type": "object", "properties": {
                "job_id": {"type": "integer"}, "attempt": {"type": "integer"}, "lines": {"type": "array", "items": {"type": "string"}}}}), **ERR}}},
        "/jobs/{job_id}/cancel": {"post": {"summary": "Cancel queued or running work", "parameters": job_id,
                                           "responses": {"202": _json(_ref("Job"), "Accepted"), **ERR}}},
        "/jobs/{job_id}/retry": {"post": {"summary": "Run a failed or cancelled job again (attempt + 1)", "parameters": job_id,
                                          "responses": {"202": _json(_ref("Job"), "Accepted"), **ERR}}},
        "/artifacts": {"get": {"summary": "Artifact registry", "parameters": PAGE + [
            {"name": "format", "in": "query", "schema": {"type": "string", "enum": list(ARTIFACT_FORMATS)}},
            {"name": "job_id", "in": "query", "schema": {"type": "integer"}}], "responses": {"200": _json(_page("artifacts", "Artifact")), **ERR}}},
        "/artifacts/{artifact_id}": {"get": {"summary": "One artifact", "parameters": art_id, "responses": {"200": _json(_ref("Artifact")), **ERR}}},
        "/artifacts/{artifact_id}/download": {"get": {"summary": "Download (ETag = sha256; If-None-Match and Range honoured)", "parameters": art_id,
                                                      "responses": {"200": {"description": "the file", "headers": {
                                                          "ETag": {"schema": {"type": "string"}}, "Content-Length": {"schema": {"type": "integer"}}},
                                                          "content": {"application/octet-stream": {}}}, "304": {"description": "Not modified"}, **ERR}}},
        "/datasets": {
            "post": {"summary": "Register a server ImageFolder (JSON) or upload a .zip/.tar.gz (multipart: name, file)", "requestBody": {
                "required": True, "content": {
                    "application/json": {"schema": {"type": "object", "required": ["name", "path"], "additionalProperties": False,
                                                    "properties": {"name": {"type": "string"}, "path": {"type": "string"}}}},
                    "multipart/form-data": {"schema": {"type": "object", "required": ["name", "file"], "properties": {
                        "name": {"type": "string"}, "file": {"type": "string", "format": "binary"}}}}}},
                "responses": {"201": _json(_ref("Dataset"), "Created"), **ERR}},
            "get": {"summary": "List datasets", "parameters": PAGE, "responses": {"200": _json(_page("datasets", "Dataset")), **ERR}}},
        "/datasets/{dataset_id}": {"get": {"summary": "One dataset", "parameters": [ID("dataset_id")], "responses": {"200": _json(_ref("Dataset")), **ERR}}},
        "/health": {"get": {"summary": "Liveness with database and broker checks", "security": [], "responses": {
            "200": _json({"type": "object"}), "503": _json({"type": "object"}, "Degraded")}}},
        "/openapi.json": {"get": {"summary": "This document", "security": [], "responses": {"200": _json({"type": "object"})}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "distillery", "version": "1", "description": "Train compact DeiT students distilled from RegNetY teachers, "
                 "export int8 .ptl. Errors are {\"error\": {\"code\", \"message\", \"field\"}}."},
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {"schemas": schemas,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "distillery token create --user NAME"}},
                       "responses": {"Error": _json(_ref("Error"), "Bad request, unauthorized (401), not found (404), conflict (409), too large (413)")}},
    }


def openapi_json():
    return jsonify(build_openapi())
