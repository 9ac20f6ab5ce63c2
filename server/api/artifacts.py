"""Artifact registry and downloads."""
from __future__ import annotations

from pathlib import Path

from flask import g, jsonify, request, send_file
from sqlalchemy import select

from ..auth import login_required
from ..errors import ApiError
from ..models import Artifact, Job
from ..serializers import serialize_artifact
from ..vocabulary import ARTIFACT_FORMATS
from .base import MAX_CURSOR, arg_int, db, paginate


def _visible():
    q = select(Artifact).join(Job, Artifact.job_id == Job.id).order_by(Artifact.id.desc())
    if not g.user.is_admin:
        q = q.where(Job.owner_id == g.user.id)
    return q


def _get_or_404(artifact_id: int) -> Artifact:
    art = db().scalar(_visible().where(Artifact.id == artifact_id))
    if art is None:
        raise ApiError(404, "not_found", f"artifact {artifact_id} not found")
    return art


@login_required
def list_artifacts():
    q = _visible()
    fmt = request.args.get("format")
    if fmt is not None:
        if fmt not in ARTIFACT_FORMATS:
            raise ApiError(400, "invalid_parameter", f"one of {', '.join(ARTIFACT_FORMATS)}", "format")
        q = q.where(Artifact.format == fmt)
    if "job_id" in request.args:
        q = q.where(Artifact.job_id == arg_int("job_id", 0, 1, MAX_CURSOR))
    return jsonify(paginate(q, "artifacts", serialize_artifact, Artifact.id))


@login_required
def get_artifact(artifact_id: int):
    return jsonify(serialize_artifact(_get_or_404(artifact_id)))


@login_required
def download_artifact(artifact_id: int):
    """Stream the file with Content-Length, the sha256 as a strong ETag, and Range/If-None-Match."""
    art = _get_or_404(artifact_id)
    path = Path(art.path)
    if not path.is_file():
        raise ApiError(410, "gone", f"artifact {art.id}'s file is missing from storage")
    resp = send_file(path, as_attachment=True, download_name=f"job{art.job_id}-{path.name}",
                     etag=art.sha256, conditional=True, max_age=0)
    resp.headers["X-Checksum-Sha256"] = art.sha256
    return resp
