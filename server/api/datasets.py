"""Datasets: register a server ImageFolder (JSON) or upload an archive (multipart)."""
from __future__ import annotations

import errno
import re
import shutil
import tempfile
from pathlib import Path

from flask import g, jsonify, request
from sqlalchemy import select
from sqlalchemy.orm import joinedload

from deit_core.files import storage_error

from ..archives import ArchiveRefused, unpack_dataset
from ..auth import login_required
from ..errors import ApiError
from ..models import Dataset
from ..serializers import serialize_dataset
from ..storage import PathRefused, check_links, scan_dataset
from ..submissions import Scope
from .base import db, get_object_or_404, json_body, paginate, settings

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"  # openapi.json says the same for both bodies
NAME_RE = re.compile(NAME_PATTERN)


def _check_name(name) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ApiError(400, "invalid_field", "letters, digits, '_', '.', '-' (1-100, not starting with a symbol)", "name")
    if db().scalar(select(Dataset.id).where(Dataset.name == name)) is not None:
        raise ApiError(409, "conflict", f"a dataset named {name!r} exists", "name")
    return name


@login_required
def create_dataset():
    if request.mimetype == "multipart/form-data":
        return _upload()
    body = json_body({"name", "path"}, required={"name", "path"})
    name = _check_name(body["name"])
    if not isinstance(body["path"], str):
        raise ApiError(400, "invalid_field", "must be a string", "path")
    try:
        root = Scope(db(), settings(), g.user).folder(body["path"])
        check_links(root, Scope(db(), settings(), g.user).may_read, depth=3)
        counts = scan_dataset(root)
    except PathRefused as e:
        raise ApiError(400, "invalid_dataset", str(e), "path") from None
    ds = Dataset(name=name, owner_id=g.user.id, source="path", path=str(root), **counts)
    s = db()
    s.add(ds)
    s.commit()
    return jsonify(serialize_dataset(ds)), 201


def _upload():
    st = settings()
    if request.content_length is not None and request.content_length > st.max_upload_bytes:
        raise ApiError(413, "payload_too_large", f"archive larger than {st.max_upload_bytes} bytes", "file")
    for key in request.form:
        if key != "name":
            raise ApiError(400, "unknown_field", "unknown form field; allowed: name, file", key)
    name = _check_name(request.form.get("name"))
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        raise ApiError(400, "missing_field", "attach the archive as form field 'file'", "file")
    if not upload.filename.endswith((".zip", ".tar.gz", ".tgz")):
        raise ApiError(400, "invalid_archive", "must be a .zip or .tar.gz file", "file")
    dest = st.datasets_path / name
    if dest.exists():
        raise ApiError(409, "conflict", f"a dataset folder named {name!r} already exists", "name")
    st.datasets_path.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(dir=st.datasets_path, prefix=".upload.") as tmp:
            archive = Path(tmp) / "archive"
            upload.save(archive)
            counts = unpack_dataset(archive, dest, st.max_archive_files, st.max_archive_bytes, st.max_archive_ratio)
    except ArchiveRefused as e:
        raise ApiError(400, "invalid_archive", str(e), "file") from None
    except OSError as e:  # the temp folders are gone already (TemporaryDirectory, unpack_dataset)
        raise _storage_failure(e, f"datasets/{name}") from None
    ds = Dataset(name=name, owner_id=g.user.id, source="upload", path=str(dest), **counts)
    s = db()
    s.add(ds)
    try:
        s.commit()
    except Exception:
        s.rollback()
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return jsonify(serialize_dataset(ds)), 201


def _storage_failure(e: OSError, what: str) -> ApiError:
    """A full disk (or quota) is 507 Insufficient Storage; anything else on the server's side
    (permissions, a read-only volume) is 500; both say plainly what failed."""
    reason = storage_error(e, what)
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return ApiError(507, "insufficient_storage", f"{reason}; free space on the server or upload a smaller archive",
                        "file")
    return ApiError(500, "storage_error", str(reason), "file")


@login_required
def list_datasets():
    q = select(Dataset).options(joinedload(Dataset.owner)).order_by(Dataset.id.desc())  # owners with the page
    if not g.user.is_admin:
        q = q.where(Dataset.owner_id == g.user.id)
    return jsonify(paginate(q, "datasets", serialize_dataset, Dataset.id))


@login_required
def get_dataset(dataset_id: int):
    return jsonify(serialize_dataset(get_object_or_404(Dataset, dataset_id)))
