"""Every word the service, the worker, the dashboard and the client agree on, defined once.

Job kinds and distillation types belong to the engine's schema (``deit_core.config``) and are
re-exported here so the service has one place to import its vocabulary from. The dashboard gets
these lists from the page (``window.DISTILLERY``), the client from this module.
"""
from __future__ import annotations

from deit_core.config import DISTILLATION_TYPES, KINDS
from deit_core.layout import MAX_INT32

# Job states, in the order a job moves through them. ``pruned``: a sweep's pruner stopped the trial.
QUEUED, RUNNING, EXPORTING = "queued", "running", "exporting"
SUCCEEDED, FAILED, CANCELLED, PRUNED = "succeeded", "failed", "cancelled", "pruned"
JOB_STATES = (QUEUED, RUNNING, EXPORTING, SUCCEEDED, FAILED, CANCELLED, PRUNED)
ACTIVE_STATES = (QUEUED, RUNNING, EXPORTING)
IN_PROGRESS_STATES = (RUNNING, EXPORTING)  # a worker owns the job
FINAL_STATES = (SUCCEEDED, FAILED, CANCELLED, PRUNED)
RETRYABLE_STATES = (FAILED, CANCELLED)

# Why a job stopped (``Job.stop_reason``; null while it runs on and when it succeeds). Set when the
# stop is asked for (cancel, prune: the worker reads it to pick the final state) or when the job ends:
# cancelled (by a user or its sweep), pruned (a sweep's pruner), lease_lost (its worker vanished: the
# last attempt's lease expired with no attempts left), failed (the run or its queueing failed).
LEASE_LOST = "lease_lost"
STOP_REASONS = (CANCELLED, PRUNED, LEASE_LOST, FAILED)

# The engine's kinds (deit_core.config.KINDS) plus the service's own: a sweep runs no process of
# its own; it drives an Optuna study whose trials are distill jobs (its children).
TEACHER, DISTILL, TEACHER_OUTPUTS = KINDS
SWEEP = "sweep"
JOB_KINDS = (*KINDS, SWEEP)

# Job priorities, lowest first; only admins may submit "high". The broker delivers higher first.
PRIORITIES = ("low", "normal", "high")
DEFAULT_PRIORITY = "normal"

# How a worker starts a run: torchrun on its own host, or a Slurm batch job (srun + torchrun per node).
LOCAL, SLURM = "local", "slurm"
LAUNCHERS = (LOCAL, SLURM)

# The largest row id: ids are 32-bit INTEGER columns, so a larger one is a 404, never a database error.
MAX_ID = MAX_INT32

# Artifact formats (what a file is) and kinds (what it is for). ``teacher_outputs``: a
# teacher-output cache (deit_core.teacher_cache), reusable by later students. ``predictions``: a
# model's per-image val predictions (deit_core.predictions), named by the model they come from
# (PREDICTIONS_NAMES): what two jobs on the same val set are compared image by image with.
PREDICTIONS = "predictions"
ARTIFACT_FORMATS = ("checkpoint", "ptl", "pte", "pt", "labels", "report", "teacher_outputs", PREDICTIONS)
# A predictions artifact's name: ``val`` for training's final/val_predictions.json, else the
# exported variant of the export's predictions.<variant>.json (deit_core.export).
VAL_PREDICTIONS_NAME = "val"
EXPORT_PREDICTIONS_NAMES = ("fp32", "int8", "ptl", "pte")
PREDICTIONS_NAMES = (VAL_PREDICTIONS_NAME, *EXPORT_PREDICTIONS_NAMES)
# A distill job with ``baseline: true`` may ask for this many training seeds at most (``seeds: N``).
MAX_SEEDS = 5

# A webhook event's sending state (server.webhooks): waiting for its next try, answered 2xx, or given up.
DELIVERY_PENDING, DELIVERY_DELIVERED, DELIVERY_FAILED = "pending", "delivered", "failed"
DELIVERY_STATES = (DELIVERY_PENDING, DELIVERY_DELIVERED, DELIVERY_FAILED)
# The event a webhook hears, and the header carrying its signature: "sha256=" + HMAC-SHA256(secret, body) in hex.
WEBHOOK_EVENT = "job.finished"
SIGNATURE_HEADER = "X-Distillery-Signature"

# The Celery task the API sends by name; the worker registers a function under it.
RUN_TASK = "distillery.run_job"

__all__ = ["DISTILLATION_TYPES", "JOB_KINDS", "JOB_STATES", "ACTIVE_STATES", "IN_PROGRESS_STATES", "FINAL_STATES",
           "RETRYABLE_STATES", "ARTIFACT_FORMATS", "RUN_TASK", "QUEUED", "RUNNING", "EXPORTING", "SUCCEEDED",
           "FAILED", "CANCELLED", "PRUNED", "TEACHER", "DISTILL", "TEACHER_OUTPUTS", "SWEEP", "PRIORITIES",
           "DEFAULT_PRIORITY", "LAUNCHERS", "LOCAL", "SLURM", "MAX_ID", "LEASE_LOST", "STOP_REASONS",
           "PREDICTIONS", "VAL_PREDICTIONS_NAME", "EXPORT_PREDICTIONS_NAMES", "PREDICTIONS_NAMES", "MAX_SEEDS",
           "DELIVERY_PENDING", "DELIVERY_DELIVERED", "DELIVERY_FAILED", "DELIVERY_STATES", "WEBHOOK_EVENT", "SIGNATURE_HEADER"]
