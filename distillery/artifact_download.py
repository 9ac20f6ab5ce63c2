"""Downloading a job's artifact: streamed to a temporary file, sha256-checked against the registry
(and the ETag), then moved into place, so an interrupted or corrupted download never leaves a
half-written model behind. Both the job commands and ``distillery sweep download`` use it.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .api_client import EXIT_CHECKSUM, EXIT_NOT_FOUND, ApiClient, ClientError

# File names a download gets when the server does not suggest one.
FORMAT_SUFFIX = {"ptl": ".ptl", "pte": ".pte", "pt": ".pt", "checkpoint": ".safetensors",
                 "report": ".json", "labels": ".json"}


def _filename_from_disposition(header: str | None) -> str | None:
    if not header:
        return None
    m = re.search(r"filename\*=UTF-8''([^;]+)", header) or re.search(r'filename="?([^";]+)"?', header)
    return os.path.basename(m.group(1).strip()) if m else None


def _etag_sha256(etag: str | None) -> str | None:
    """The sha256 in an ETag header (quotes and a weak ``W/`` prefix removed), if it is one."""
    if not etag:
        return None
    value = etag.strip()
    if value.startswith("W/"):
        value = value[2:]
    value = value.strip('"').lower()
    if value.startswith("sha256:"):
        value = value[7:]
    return value if re.fullmatch(r"[0-9a-f]{64}", value) else None


def response_chunks(resp: Any) -> Iterator[bytes]:
    """A streamed response's body, a megabyte at a time."""
    yield from resp.iter_content(chunk_size=1 << 20)


def export_report(client: ApiClient, job: dict[str, Any]) -> dict[str, Any]:
    """The job's newest export report (deit_core/export.py's report.json), ``{}`` when it has none."""
    art = next((a for a in reversed(job.get("artifacts") or []) if a.get("format") == "report"), None)
    if art is None:
        return {}
    resp = client.get(f"/artifacts/{art['id']}/download", stream=True, what=f"artifact {art['id']}")
    try:
        report = json.loads(b"".join(response_chunks(resp)))
    except ValueError:
        return {}
    finally:
        resp.close()
    return report if isinstance(report, dict) else {}


def missing_reason(client: ApiClient, job: dict[str, Any], fmt: str) -> str:
    """Why a job has no ``fmt`` artifact, from what its export report records as skipped (``model.pte:
    --no-pte given``); the job's state when it has not exported yet."""
    if job.get("state") != "succeeded":
        return f"the job is {job.get('state')}; artifacts are registered when its export ends"
    skipped = [str(s) for s in export_report(client, job).get("skipped") or []
               if str(s).startswith((f"model.{fmt}:", f"{fmt}:"))]
    if not skipped:
        return "its export report does not say why"
    why = f"its export skipped it ({'; '.join(skipped)})"
    if f"--no-{fmt}" in why:
        why = f"its export ran with --no-{fmt} (the service's DISTILLERY_EXPORT_ARGS; the demo sets it for a quicker export)"
    return why


def download_artifact(client: ApiClient, job_id: int, fmt: str, output: str | None) -> tuple[Path, str, int]:
    """Download a job's artifact of format ``fmt``, verify its sha256 and write it atomically.

    The bytes go to a temporary file next to the target, are hashed as they stream, and replace the
    target only when the hash matches the registry's sha256 (and the ETag, when it carries one), so
    an interrupted or corrupted download never leaves a half-written model behind.

    Returns:
        (path written, sha256, size in bytes)
    """
    job = client.get(f"/jobs/{job_id}", what=f"job {job_id}")
    arts = [a for a in job.get("artifacts") or [] if a.get("format") == fmt]
    if not arts:
        have = ", ".join(sorted({str(a.get("format")) for a in job.get("artifacts") or []})) or "none yet"
        raise ClientError(f"job {job_id} has no {fmt} artifact: {missing_reason(client, job, fmt)} (artifacts: {have})",
                          EXIT_NOT_FOUND)
    art = arts[-1]
    resp = client.get(f"/artifacts/{art['id']}/download", stream=True, what=f"artifact {art['id']}")
    expected = {h for h in (str(art.get("sha256") or "").lower() or None, _etag_sha256(resp.headers.get("ETag"))) if h}
    if len(expected) > 1:
        raise ClientError(f"artifact {art['id']}: the registry sha256 and the ETag disagree", EXIT_CHECKSUM)
    default_name = (_filename_from_disposition(resp.headers.get("Content-Disposition"))
                    or art.get("filename") or f"job{job_id}{FORMAT_SUFFIX.get(fmt, '.' + fmt)}")
    if not output:
        target = Path(default_name)
    elif output.endswith(("/", os.sep)) or Path(output).is_dir():
        target = Path(output) / default_name
    else:
        target = Path(output)
    target.parent.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in response_chunks(resp):
                f.write(chunk)
                digest.update(chunk)
                size += len(chunk)
            f.flush()
            os.fsync(f.fileno())
        from deit_core.files import current_umask

        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; a model file is an ordinary file
        got = digest.hexdigest()
        if expected and got not in expected:
            raise ClientError(f"sha256 mismatch for artifact {art['id']}: expected {expected.pop()}, got {got}; "
                              "nothing was written", EXIT_CHECKSUM)
        if not expected:
            print(f"warning: the server gave no sha256 for artifact {art['id']}; not verified", file=sys.stderr)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        resp.close()
    return target, got, size
