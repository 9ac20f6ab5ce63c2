"""Rows to JSON, kept apart from handlers so the API, the dashboard and the CLI agree on shapes."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from .models import Artifact, Dataset, Job

PROGRESS_KEYS = ("epoch", "epochs", "step", "steps_per_epoch", "fraction", "eta_s")


def iso(ts: datetime | None) -> str | None:
    if ts is None:
        return None
    if ts.tzinfo is None:  # SQLite returns naive datetimes; they were written as UTC
        ts = ts.replace(tzinfo=timezone.utc)
    return ts.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def serialize_artifact(a: Artifact) -> dict[str, Any]:
    return {"id": a.id, "job_id": a.job_id, "kind": a.kind, "format": a.format, "size": a.size,
            "sha256": a.sha256, "filename": a.path.rsplit("/", 1)[-1], "metadata": a.meta or {},
            "created_at": iso(a.created_at), "download_url": f"/api/v1/artifacts/{a.id}/download"}


def serialize_job(job: Job, with_config: bool = True) -> dict[str, Any]:
    progress = {k: (job.progress or {}).get(k) for k in PROGRESS_KEYS}
    if progress["fraction"] is None:
        progress["fraction"] = 1.0 if job.state == "succeeded" else 0.0
    out = {
        "id": job.id, "kind": job.kind, "name": job.name, "state": job.state, "attempt": job.attempt,
        "parent_id": job.parent_id, "owner": job.owner.name if job.owner else None,
        "created_at": iso(job.created_at), "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at), "updated_at": iso(job.updated_at), "error": job.error,
        "cancel_requested": bool(job.cancel_requested), "worker": job.worker,
        "progress": progress, "metrics": dict(job.metrics or {}),
        "artifacts": [serialize_artifact(a) for a in job.artifacts],
    }
    if with_config:
        out["config"] = job.config
    return out


def serialize_dataset(d: Dataset) -> dict[str, Any]:
    return {"id": d.id, "name": d.name, "source": d.source, "path": d.path, "num_classes": d.num_classes,
            "num_train": d.num_train, "num_val": d.num_val, "owner": d.owner.name if d.owner else None,
            "created_at": iso(d.created_at),
            "train": f"{d.path}/train", "val": f"{d.path}/val"}
