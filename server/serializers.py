"""Rows to JSON, kept apart from handlers so the API, the dashboard and the CLI agree on shapes."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy.orm import object_session

from deit_core.teacher_fitness import fitness_warning

from . import replicates
from .export_reports import read_report
from .models import Artifact, Dataset, Job
from .ship_card import card_row, ship_card, sweep_card
from .vocabulary import LOCAL, QUEUED, SWEEP, TEACHER
from .workers import Capacity, live_capacity, waiting_reason

PROGRESS_KEYS = ("epoch", "epochs", "step", "steps_per_epoch", "fraction", "eta_s", "phase", "num_classes")
# The exported model is the last epoch's weights (deit_core.train writes final/ from self.model, not the
# best epoch, not the EMA), so its validation top-1 is the one number shown everywhere.
EXPORTED_CHECKPOINT = "final"


def exported_top1(job: Job) -> float | None:
    """Val top-1 of the checkpoint the service exports (the final epoch's), or None before the first epoch."""
    value = (job.metrics or {}).get("val_top1")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def chance_level(job: Job) -> float | None:
    """100 / classes: the top-1 of guessing."""
    n = (job.progress or {}).get("num_classes")
    return 100.0 / n if isinstance(n, int) and n > 1 else None


def at_chance(job: Job) -> bool:
    """A finished run whose top-1 is within half of chance of guessing learned nothing useful."""
    top1, chance = exported_top1(job), chance_level(job)
    return job.state == "succeeded" and top1 is not None and chance is not None and top1 <= 1.5 * chance


# The gain fields of ``baseline`` (deit_core.paired_stats.gain_fields), null until the group's comparison is stored.
GAIN_KEYS = ("gain", "gain_ci95", "mcnemar_p", "n_images", "verdict", "per_seed")


def baseline_info(job: Job, relatives: replicates.Relatives | None = None) -> dict[str, Any] | None:
    """For a distill job submitted with ``baseline: true``: its teacher-less twin (seed 0's) and the
    gain over the baselines with its evidence, as ``worker.comparison`` stored it in the primary's
    ``comparison`` (read here, never computed: no gain is shown without its interval). Until it is
    stored, ``pending`` says what the group waits for. A replicate (seed k > 0) shows its own twin and
    points at the primary's comparison through ``replicate_of``."""
    db = object_session(job)
    if db is None or job.kind != "distill":
        return None
    twin = relatives.twins.get(job.id) if relatives is not None else replicates.twin_of(db, job.id)
    if twin is None:
        return None
    stored = job.comparison or {}
    out: dict[str, Any] = {"job_id": twin.id, "state": twin.state, "top1": exported_top1(twin)}
    out.update({k: stored.get(k) for k in GAIN_KEYS})
    out["significant"] = bool(stored.get("significant", False))
    out["ci_over"] = stored.get("ci_over", "seeds" if (job.seeds or 1) > 1 else "images")
    out["seeds"] = int(stored.get("seeds") or job.seeds or 1)
    out["ptl"] = stored.get("ptl")
    out["pending"] = stored.get("pending") if job.comparison is not None else _waiting(db, job, relatives)
    return out


def _waiting(db, job: Job, relatives: replicates.Relatives | None = None) -> str | None:
    """What a group with no stored comparison waits for (a replicate: its primary's comparison)."""
    if job.replicate_of is not None:
        return f"the comparison is on the primary job {job.replicate_of}"
    return replicates.pending_reason(replicates.group(db, job, relatives), job.seeds or 1) or "comparing the runs' predictions"


def teacher_job(job: Job) -> Job | None:
    """The teacher job a distill job (or a sweep's trials) learned from: its pipeline parent, or the job
    whose checkpoint artifact ``teacher.checkpoint`` names; None for a server path or ``timm`` weights."""
    db = object_session(job)
    if db is None:
        return None
    if job.parent_id is not None:
        parent = db.get(Job, job.parent_id)
        if parent is not None and parent.kind == TEACHER:
            return parent
    cfg = job.config or {}
    if job.kind == SWEEP:  # a sweep keeps its trials' distill config as "base"
        cfg = cfg.get("base") or {}
    ref = (cfg.get("teacher") or {}).get("checkpoint")
    if isinstance(ref, int) and not isinstance(ref, bool):
        art = db.get(Artifact, ref)
        return art.job if art is not None else None
    return None


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _fitness(job: Job) -> dict[str, Any]:
    """The teacher's top-1 on the student's training crops (recorded by the distill run) beside its val
    top-1, with the warning of :func:`deit_core.teacher_fitness.fitness_warning` when it is low."""
    metrics, dist = job.metrics or {}, (job.config or {}).get("distillation") or {}
    train, val = metrics.get("teacher_train_top1"), metrics.get("teacher_top1")
    warning = (fitness_warning(float(train), float(val) if _number(val) else None, str(dist.get("type", "none")),
                               float(dist.get("alpha", 0.0)))
               if _number(train) else None)
    return {"teacher_train_top1": train if _number(train) else None, "teacher_val_top1": val if _number(val) else None,
            "fitness_warning": warning}


def ship_card_info(job: Job, baseline: dict[str, Any] | None) -> dict[str, Any] | None:
    """The ship card (``server.ship_card``) of a distill job that is not itself a baseline: its teacher,
    itself and its baseline (for ``seeds: N``, the seed-0 runs; the gain is the across-seed one in
    ``baseline``), each with its export report's .ptl latency and size."""
    db = object_session(job)
    if db is None or job.kind != "distill" or job.baseline_of is not None or getattr(job, "replicate_of", None):
        return None
    teacher = teacher_job(job)
    fitness = _fitness(job)
    if teacher is not None:
        teacher_row = card_row("teacher", teacher.id, ((teacher.config or {}).get("teacher") or {}).get("model"),
                               exported_top1(teacher), read_report(teacher), state=teacher.state, **fitness)
    else:
        teacher_row = card_row("teacher", None, ((job.config or {}).get("teacher") or {}).get("model"),
                               fitness["teacher_val_top1"], None, state=None, **fitness)
    student_row = card_row("student", job.id, ((job.config or {}).get("student") or {}).get("model"), exported_top1(job),
                           read_report(job), state=job.state, at_chance=at_chance(job))
    twin = db.get(Job, baseline["job_id"]) if baseline and isinstance(baseline.get("job_id"), int) else None
    alone_row = None if twin is None else card_row(
        "baseline", twin.id, ((twin.config or {}).get("student") or {}).get("model"), exported_top1(twin), read_report(twin),
        state=twin.state, at_chance=at_chance(twin))
    return ship_card(teacher_row, student_row, alone_row, baseline)


def sweep_ship_card(job: Job, summary: dict[str, Any] | None) -> dict[str, Any] | None:
    """A sweep's ship card: its teacher and the trials on its accuracy-latency front (``server.ship_card``)."""
    if not summary:
        return None
    teacher = teacher_job(job)
    teacher_row = None if teacher is None else card_row(
        "teacher", teacher.id, ((teacher.config or {}).get("teacher") or {}).get("model"), exported_top1(teacher),
        read_report(teacher), state=teacher.state)
    return sweep_card(teacher_row, summary)


def iso_utc(ts: datetime | None) -> str | None:
    """A timestamp as the API, the attempt history and the logs write it: ISO 8601 in UTC with ``Z``."""
    if ts is None:
        return None
    if ts.tzinfo is None:  # SQLite returns naive datetimes; they were written as UTC
        ts = ts.replace(tzinfo=timezone.utc)
    return ts.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")




def serialize_artifact(a: Artifact) -> dict[str, Any]:
    return {"id": a.id, "job_id": a.job_id, "kind": a.kind, "format": a.format, "size": a.size,
            "sha256": a.sha256, "filename": a.path.rsplit("/", 1)[-1], "metadata": a.meta or {}, "name": a.name,
            "created_at": iso_utc(a.created_at), "download_url": f"/api/v1/artifacts/{a.id}/download"}


def serialize_job(job: Job, with_config: bool = True, capacity: Capacity | None = None,
                  relatives: replicates.Relatives | None = None) -> dict[str, Any]:
    """A job as the API shows it. ``capacity``: the live workers (``server.workers.live_capacity``),
    read once by a list handler for all its rows; read here when a queued job needs it and none is given."""
    progress = {k: (job.progress or {}).get(k) for k in PROGRESS_KEYS}
    if progress["fraction"] is None:
        progress["fraction"] = 1.0 if job.state == "succeeded" else 0.0
    out = {
        "id": job.id, "kind": job.kind, "name": job.name, "state": job.state, "attempt": job.attempt,
        "parent_id": job.parent_id, "owner": job.owner.name if job.owner else None,
        "created_at": iso_utc(job.created_at), "started_at": iso_utc(job.started_at),
        "finished_at": iso_utc(job.finished_at), "updated_at": iso_utc(job.updated_at), "error": job.error,
        "stop_reason": job.stop_reason,
        "cancel_requested": bool(job.cancel_requested), "worker": job.worker,
        "max_attempts": job.max_attempts, "attempt_history": list(job.attempt_history or []),
        "lease": ({"owner": job.lease_owner, "expires_at": iso_utc(job.lease_expires_at),
                   "heartbeat_at": iso_utc(job.heartbeat_at)}
                  if job.lease_owner and job.lease_expires_at else None),
        "progress": progress, "metrics": dict(job.metrics or {}),
        "top1": exported_top1(job), "top1_checkpoint": EXPORTED_CHECKPOINT,
        "chance_top1": chance_level(job), "at_chance": at_chance(job),
        "baseline_of": job.baseline_of, "baseline": baseline_info(job, relatives),
        "seeds": job.seeds or 1, "replicate_of": job.replicate_of,
        "artifacts": [serialize_artifact(a) for a in job.artifacts],
    }
    out["trial_number"] = job.trial_number
    out["sweep_id"] = job.id if job.kind == SWEEP else (job.parent_id if job.trial_number is not None else None)
    out["priority"] = job.priority
    if job.state == QUEUED and capacity is None and object_session(job) is not None:
        capacity = live_capacity(object_session(job))
    out["waiting_reason"] = waiting_reason(job, capacity) if job.state == QUEUED and capacity is not None else None
    # How the attempt was started: "slurm" with its Slurm job id, or the local launcher (null id).
    out["launcher"] = {"kind": job.launcher or LOCAL, "job_id": job.launcher_job_id}
    if with_config:  # the detail view (lists stay small)
        out["config"] = job.config
        out["ship_card"] = ship_card_info(job, out["baseline"])
        if job.kind == SWEEP:  # its trials, best and fronts, as the worker last stored them (worker.sweep)
            out["sweep"] = (job.progress or {}).get("sweep")
            out["ship_card"] = sweep_ship_card(job, out["sweep"])
    return out


def serialize_dataset(d: Dataset) -> dict[str, Any]:
    return {"id": d.id, "name": d.name, "source": d.source, "path": d.path, "num_classes": d.num_classes,
            "num_train": d.num_train, "num_val": d.num_val, "owner": d.owner.name if d.owner else None,
            "created_at": iso_utc(d.created_at),
            "train": f"{d.path}/train", "val": f"{d.path}/val"}
