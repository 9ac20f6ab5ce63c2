"""Every word the service, the worker, the dashboard and the client agree on, defined once.

Job kinds and distillation types belong to the engine's schema (``deit_core.config``) and are
re-exported here so the service has one place to import its vocabulary from. The dashboard gets
these lists from the page (``window.DISTILLERY``), the client from this module.
"""
from __future__ import annotations

from deit_core.config import DISTILLATION_TYPES, KINDS

# Job states, in the order a job moves through them.
QUEUED, RUNNING, EXPORTING = "queued", "running", "exporting"
SUCCEEDED, FAILED, CANCELLED = "succeeded", "failed", "cancelled"
JOB_STATES = (QUEUED, RUNNING, EXPORTING, SUCCEEDED, FAILED, CANCELLED)
ACTIVE_STATES = (QUEUED, RUNNING, EXPORTING)
IN_PROGRESS_STATES = (RUNNING, EXPORTING)  # a worker owns the job
FINAL_STATES = (SUCCEEDED, FAILED, CANCELLED)
RETRYABLE_STATES = (FAILED, CANCELLED)

JOB_KINDS = KINDS
TEACHER, DISTILL = KINDS

# Artifact formats (what a file is) and kinds (what it is for).
ARTIFACT_FORMATS = ("checkpoint", "ptl", "pte", "pt", "labels", "report")

# The Celery task the API sends by name; the worker registers a function under it.
RUN_TASK = "distillery.run_job"

__all__ = ["DISTILLATION_TYPES", "JOB_KINDS", "JOB_STATES", "ACTIVE_STATES", "IN_PROGRESS_STATES", "FINAL_STATES",
           "RETRYABLE_STATES", "ARTIFACT_FORMATS", "RUN_TASK", "QUEUED", "RUNNING", "EXPORTING", "SUCCEEDED",
           "FAILED", "CANCELLED", "TEACHER", "DISTILL"]
