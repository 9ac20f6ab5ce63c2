"""Registering what an attempt produced as artifacts of its job: the checkpoint, the export's files,
a rejected export's report, a teacher-output cache (``worker.teacher_cache``), and the per-image
val predictions of the trained model and of every exported variant (format ``predictions``, named
``val``/``fp32``/``int8``/``ptl``/``pte``): what ``worker.comparison`` compares two jobs with.

A file is hard-linked (or copied) from the run directory into ``<artifacts>/<job id>/attempt-<n>/``,
so it outlives the pruning of old run directories (``worker.retention``), and its row is inserted
under the attempt's lease (:meth:`worker.attempt.Attempt.fenced`): a worker that lost the job
registers nothing for it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from deit_core.files import sha256_file
from server.models import Artifact
from server.storage import link_or_copy
from server.vocabulary import PREDICTIONS, VAL_PREDICTIONS_NAME

from .attempt import Attempt
from .run_contract import (
    CHECKPOINT_ARTIFACT,
    EXPORT_FILES,
    EXPORT_PREDICTIONS,
    EXPORT_REPORT,
    FINAL_CONFIG,
    FINAL_PREDICTIONS,
    FINAL_WEIGHTS,
    attempt_dir,
)


def add_row(attempt: Attempt, **values: Any) -> int:
    """Insert an artifact row of the attempt's job under its lease (waiting out a database outage); its id."""
    def add(s) -> int:
        attempt.fenced(s)
        art = Artifact(job_id=attempt.job_id, **values)
        s.add(art)
        s.flush()
        return art.id

    return attempt.retried(add)


def register_file(attempt: Attempt, artifacts_root: Path, src: Path, kind: str, fmt: str,
                  meta: dict[str, Any] | None = None, name: str | None = None, artifact_name: str | None = None) -> int:
    """Link ``src`` into the attempt's artifacts (as ``name``, default its own name) and register it
    (with ``artifact_name`` as the row's ``name``, what it is looked up by)."""
    dest = attempt_dir(artifacts_root, attempt.job_id, attempt.number) / (name or src.name)
    link_or_copy(src, dest)
    art_id = add_row(attempt, kind=kind, format=fmt, path=str(dest), size=dest.stat().st_size, sha256=sha256_file(dest),
                     meta=meta or {}, name=artifact_name)
    attempt.log.info("registered %s artifact %d (%s)", fmt, art_id, dest.name)
    return art_id


def register_predictions(attempt: Attempt, artifacts_root: Path, src: Path, name: str) -> int | None:
    """A predictions file (``deit_core.predictions``) as a ``predictions`` artifact named ``name``;
    its top-1 and model in the metadata. None when the run wrote none (an engine without val predictions)."""
    if not src.exists():
        return None
    meta: dict[str, Any] = {}
    try:
        doc = json.loads(src.read_text())
        meta = {"model": doc.get("model"), "top1": doc.get("top1"), "n_images": len(doc.get("images") or [])}
    except (OSError, ValueError, AttributeError, TypeError):
        pass
    return register_file(attempt, artifacts_root, src, "metadata", PREDICTIONS, meta, artifact_name=name)


def register_checkpoint(attempt: Attempt, artifacts_root: Path, final: Path) -> int:
    """final/model.safetensors (+ config.json beside it): the folder the engine loads; and the final
    model's val predictions (``final/val_predictions.json``, artifact ``val``) beside it."""
    register_predictions(attempt, artifacts_root, final / FINAL_PREDICTIONS, VAL_PREDICTIONS_NAME)
    cfg_path = final / FINAL_CONFIG
    link_or_copy(cfg_path, attempt_dir(artifacts_root, attempt.job_id, attempt.number) / CHECKPOINT_ARTIFACT / FINAL_CONFIG)
    meta: dict[str, Any] = {"files": [FINAL_WEIGHTS, FINAL_CONFIG]}
    try:  # config.json is small and is what a client needs to rebuild the model: keep it inline
        model_config = json.loads(cfg_path.read_text())
        meta["architecture"] = model_config.get("architecture")
        meta["config_json"] = model_config
    except (OSError, ValueError, AttributeError):
        pass
    return register_file(attempt, artifacts_root, final / FINAL_WEIGHTS, "checkpoint", "checkpoint", meta,
                         name=f"{CHECKPOINT_ARTIFACT}/{FINAL_WEIGHTS}")


def register_export(attempt: Attempt, artifacts_root: Path, out: Path) -> None:
    """Register every file the exporter wrote; the report's gate result goes into its metadata.
    A missing or unreadable report after a successful export is an error, not something to skip."""
    try:
        report = json.loads((out / EXPORT_REPORT).read_text())
        gate = report["gate"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise RuntimeError(f"the exporter exited 0 but its {EXPORT_REPORT} is unreadable: {e}") from e
    for filename, (kind, fmt) in EXPORT_FILES.items():
        if (out / filename).exists():
            register_file(attempt, artifacts_root, out / filename, kind, fmt, {"gate": gate} if fmt == "report" else {})
    for variant, filename in EXPORT_PREDICTIONS.items():
        register_predictions(attempt, artifacts_root, out / filename, variant)


def register_rejected_report(attempt: Attempt, artifacts_root: Path, rejected: Path) -> None:
    """The report of an export the parity gate refused (users see why), when the exporter wrote one."""
    if (rejected / EXPORT_REPORT).exists():
        register_file(attempt, artifacts_root, rejected / EXPORT_REPORT, "report", "report", {"rejected": True})
