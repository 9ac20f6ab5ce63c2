"""The gain of a distill job over its baseline, with its evidence, stored once the group's runs end.

After any run of a replicate group (``server.replicates``) ends, :func:`update_after` checks in a
fresh transaction whether every run of the group is final. If so it reads each seed's predictions
artifacts (``val``: the trained model's final/val_predictions.json; ``ptl``: the exported .ptl's),
compares student with baseline image by image (``deit_core.predictions.paired``) and summarises the
seeds (``deit_core.paired_stats.gain_fields``: the interval is over images for one seed, over seeds
for several), and stores the result in the primary's ``comparison`` column, which the serializer
only reads. A run that did not succeed, or a missing or incomparable predictions file, stores the
reason in ``pending`` and no gain. Two runs of a group that end at the same moment may both compute
it: the result is a function of the files, so both store the same thing. The reconciler calls
:func:`fill_missing` as a backstop for groups whose last run ended without a worker's delivery
(a lease that expired, a teacher whose failure failed its waiting students).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from deit_core.paired_stats import PairedComparison, gain_fields
from deit_core.predictions import PredictionsError, paired, read_predictions
from server.db import Database
from server.models import Artifact, Job
from server.replicates import Pair, group, pending_reason, primary_of
from server.vocabulary import FINAL_STATES, PREDICTIONS, VAL_PREDICTIONS_NAME

log = logging.getLogger(__name__)

PTL_PREDICTIONS_NAME = "ptl"  # the exported .ptl's predictions (server.vocabulary.EXPORT_PREDICTIONS_NAMES)


class NotComparable(Exception):
    """A run's predictions are missing or cannot be compared; the message is the ``pending`` text."""


def predictions_path(db: Session, job: Job, name: str) -> Path:
    """The newest ``predictions`` artifact named ``name`` of ``job`` (its last attempt's)."""
    art = db.scalar(select(Artifact).where(Artifact.job_id == job.id, Artifact.format == PREDICTIONS, Artifact.name == name)
                    .order_by(Artifact.id.desc()).limit(1))
    if art is None:
        raise NotComparable(f"job {job.id} has no {name} predictions")
    return Path(art.path)


def seed_comparison(db: Session, pair: Pair, name: str) -> PairedComparison:
    """Student vs baseline of one seed, on the predictions named ``name``."""
    assert pair.baseline is not None
    try:
        return paired(read_predictions(predictions_path(db, pair.student, name)),
                      read_predictions(predictions_path(db, pair.baseline, name)))
    except PredictionsError as e:
        raise NotComparable(str(e)) from None


def summary(db: Session, pairs: list[Pair], name: str) -> dict[str, Any]:
    """The job JSON's gain fields for the predictions named ``name``, each seed's with its jobs and seed."""
    per_seed = [seed_comparison(db, p, name) for p in pairs]
    try:
        fields = gain_fields(per_seed)
    except ValueError as e:  # seeds evaluated on different val sets
        raise NotComparable(str(e)) from None
    fields["per_seed"] = [{"seed": p.seed, "student_job": p.student.id, "baseline_job": p.baseline.id if p.baseline else None,
                           **row} for p, row in zip(pairs, fields["per_seed"])]
    return fields


def compute(db: Session, primary: Job) -> dict[str, Any] | None:
    """The comparison to store on ``primary``; None while some run of its group is not final."""
    pairs = group(db, primary)
    if any(r.state not in FINAL_STATES for p in pairs for r in p.runs):
        return None
    reason = pending_reason(pairs, primary.seeds or 1)
    if reason is not None:
        return {"pending": reason}
    try:
        out = summary(db, pairs, VAL_PREDICTIONS_NAME)
    except NotComparable as e:
        return {"pending": str(e)}
    try:
        out["ptl"] = summary(db, pairs, PTL_PREDICTIONS_NAME)
    except NotComparable as e:  # the checkpoints compare; the exported models cannot (say why, beside the gain)
        out["ptl"] = None
        out["ptl_pending"] = str(e)
    out["pending"] = None
    return out


def store(db: Session, primary_id: int) -> dict[str, Any] | None:
    """Compute and store the comparison of the group whose primary is ``primary_id``; what was stored."""
    primary = db.get(Job, primary_id)
    if primary is None:
        return None
    result = compute(db, primary)
    if result is not None and result != primary.comparison:
        primary.comparison = result
        db.commit()
        log.info("job %s: stored its comparison with its baseline (%s)", primary_id,
                 result.get("verdict") or result.get("pending"))
    return result


def update_after(database: Database, job_id: int) -> dict[str, Any] | None:
    """After a run of ``job_id`` ended: the comparison of its group, stored when the group is done."""
    with database.session() as s:
        job = s.get(Job, job_id)
        primary = primary_of(s, job) if job is not None else None
        return store(s, primary.id) if primary is not None else None


def fill_missing(database: Database, limit: int = 20) -> list[int]:
    """Backstop (the reconciler): store the comparison of finished primaries that have none and whose
    group is done. Returns the primaries it stored one for."""
    with database.session() as s:
        twins = select(Job.baseline_of).where(Job.baseline_of.is_not(None))
        ids = list(s.scalars(select(Job.id).where(Job.comparison.is_(None), Job.replicate_of.is_(None),
                                                  Job.state.in_(FINAL_STATES), Job.id.in_(twins))
                             .order_by(Job.id.desc()).limit(limit)))
        return [i for i in ids if store(s, i) is not None]
