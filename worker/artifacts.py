"""Registering what an attempt produced as artifacts of its job: the checkpoint, the export's files,
a rejected export's report, a teacher-output cache (``worker.teacher_cache``), and the per-image
val predictions of the trained model and of every exported variant (format ``predictions``, named
``val``/``fp32``/``int8``/``ptl``/``pte``): what ``worker.comparison`` compares two jobs with.

A file is hard-linked (or copied) from the run directory into ``<artifacts>/<job id>/attempt-<n>/``,
so it outlives the pruning of old run directories (``worker.retention``). The link and the row are
made in one transaction *after* the attempt's fence (:meth:`worker.attempt.Attempt.fenced`), which
locks the job row under the lease until the commit: a worker that lost the job (it was stopped with
SIGSTOP, the job restarted elsewhere, then it woke up) neither registers nor writes anything under
the attempt's folder, and nobody can take the lease over between the link and the row. A commit that
fails removes the files it linked; a process killed between the two leaves a stray file, which
:func:`sweep_strays` removes once the attempt no longer holds the lease. Registering the same path
again (a retried commit, a re-attached worker) updates its row: one row per file per attempt.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from deit_core.files import sha256_file
from server.models import Artifact, Job
from server.storage import link_or_copy
from server.vocabulary import IN_PROGRESS_STATES, PREDICTIONS, VAL_PREDICTIONS_NAME

from .attempt import Attempt
from .run_contract import (
    ATTEMPT_DIR,
    CHECKPOINT_ARTIFACT,
    EXPORT_FILES,
    EXPORT_PREDICTIONS,
    EXPORT_REPORT,
    FINAL_CONFIG,
    FINAL_PREDICTIONS,
    FINAL_WEIGHTS,
    attempt_dir,
)


def add_row(attempt: Attempt, files: Sequence[tuple[Path, Path]] = (), **values: Any) -> int:
    """The artifact row of the attempt's job for ``values["path"]``, inserted (or updated, when that
    path is registered already) under its lease, waiting out a database outage; its id. ``files``
    (source, destination) are linked into place inside the same transaction, after the fence."""
    def add(s) -> int:
        attempt.fenced(s)  # raises LeaseLost before anything is written
        placed: list[Path] = []
        try:
            _place(files, placed)
            art = s.scalar(select(Artifact).where(Artifact.job_id == attempt.job_id, Artifact.path == values["path"]))
            if art is None:
                art = Artifact(job_id=attempt.job_id, **values)
                s.add(art)
            else:
                for key, value in values.items():
                    setattr(art, key, value)
            s.flush()
            art_id = art.id
            s.commit()
        except BaseException:
            s.rollback()
            for dest in placed:  # nothing registered: nothing left behind
                dest.unlink(missing_ok=True)
            raise
        return art_id

    return attempt.retried(add)


def _place(files: Sequence[tuple[Path, Path]], placed: list[Path]) -> None:
    """Link (or copy) each source to its destination; ``placed`` gets those that did not exist before."""
    for src, dest in files:
        new = not dest.exists()
        link_or_copy(src, dest)
        if new:
            placed.append(dest)


def register_file(attempt: Attempt, artifacts_root: Path, src: Path, kind: str, fmt: str,
                  meta: dict[str, Any] | None = None, name: str | None = None, artifact_name: str | None = None,
                  beside: Sequence[Path] = ()) -> int:
    """Link ``src`` into the attempt's artifacts (as ``name``, default its own name; the ``beside``
    files next to it) and register it (with ``artifact_name`` as the row's ``name``, what it is
    looked up by). Its size and sha256 are read from ``src`` before the job row is locked."""
    dest = attempt_dir(artifacts_root, attempt.job_id, attempt.number) / (name or src.name)
    files = [(src, dest), *((f, dest.parent / f.name) for f in beside)]
    art_id = add_row(attempt, files, kind=kind, format=fmt, path=str(dest), size=src.stat().st_size,
                     sha256=sha256_file(src), meta=meta or {}, name=artifact_name)
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
    meta: dict[str, Any] = {"files": [FINAL_WEIGHTS, FINAL_CONFIG]}
    try:  # config.json is small and is what a client needs to rebuild the model: keep it inline
        model_config = json.loads(cfg_path.read_text())
        meta["architecture"] = model_config.get("architecture")
        meta["config_json"] = model_config
    except (OSError, ValueError, AttributeError):
        pass
    return register_file(attempt, artifacts_root, final / FINAL_WEIGHTS, "checkpoint", "checkpoint", meta,
                         name=f"{CHECKPOINT_ARTIFACT}/{FINAL_WEIGHTS}", beside=[cfg_path])


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


def sweep_strays(s: Session, artifacts_root: Path, job_id: int) -> list[Path]:
    """Remove the files under ``<artifacts>/<job>/attempt-<n>/`` that no artifact row names, for every
    attempt that no longer holds the job's lease (an earlier attempt, or any once the job has ended):
    what a worker killed between linking a file and committing its row left. The job row is read
    before the rows: a fenced registration commits before the lease can move on, so every file of
    such an attempt that should stay is named by then. Returns the files removed."""
    job = s.get(Job, job_id)
    root = artifacts_root / str(job_id)
    if job is None or not root.is_dir():
        return []
    holding = job.attempt if job.state in IN_PROGRESS_STATES else None
    keep: set[Path] = set()
    for path, meta in s.execute(select(Artifact.path, Artifact.meta).where(Artifact.job_id == job_id)):
        keep.add(Path(path))
        keep.update(Path(path).parent / f for f in ((meta or {}).get("files") or []) if isinstance(f, str))
    removed = []
    for folder in sorted(root.iterdir()):
        m = ATTEMPT_DIR.match(folder.name)
        if not m or not folder.is_dir() or int(m.group(1)) == holding:
            continue
        for f in sorted(p for p in folder.rglob("*") if p.is_file() and p not in keep):
            f.unlink(missing_ok=True)
            removed.append(f)
    return removed
