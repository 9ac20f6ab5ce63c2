"""Presets and config warnings: what the web form (and any client) reads instead of its own copy.

``GET /presets`` lists :mod:`deit_core.presets` (name, label, the training-set size each is for,
its dotted config values); ``POST /warnings`` answers :mod:`deit_core.config_warnings` for a config
being edited (``{kind, config, preset}``, the shape of a ``POST /jobs`` body), the same list a
submission's 201 carries. Nothing is validated beyond what the rules need: a half-filled form is
checked as far as it goes.
"""
from __future__ import annotations

from typing import Mapping

from flask import g, jsonify

from deit_core.presets import PRESETS

from .. import job_requests, submission_warnings
from ..auth import login_required
from ..errors import ApiError
from ..submissions import SubmissionError
from ..vocabulary import JOB_KINDS
from .base import db, json_body, settings


@login_required
def list_presets():
    return jsonify({"presets": [p.to_dict() for p in PRESETS.values()]})


@login_required
def config_warnings():
    body = json_body({"kind", "config", "preset"}, required={"config"})
    if not isinstance(body["config"], Mapping):
        raise ApiError(400, "invalid_config", "must be a JSON object", "config")
    if "kind" in body and body["kind"] not in JOB_KINDS:
        raise ApiError(400, "invalid_config", f"must be one of {', '.join(JOB_KINDS)}, got {body['kind']!r}", "kind")
    try:
        body = job_requests.with_preset(db(), g.user, body)
    except SubmissionError as e:  # a mismatch with a named checkpoint: the submission will say it
        if e.field == "preset":
            raise
        return jsonify({"warnings": []})
    return jsonify({"warnings": submission_warnings.for_config(db(), settings(), g.user, body["config"])})
