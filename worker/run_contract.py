"""What the worker and the engine's processes agree on, in one place within the worker: the exit
codes that mean something other than "crashed", the names inside a run directory, and the files an
export writes (with the artifact kind and format each becomes).

The engine writes these names and exits with these codes (``deit_core.train``, ``distillery
export``); the worker reads them. Keeping every spelling here means a change on the engine side is
one edit on this side, and a shared constants module can replace this one by an import swap.
"""
from __future__ import annotations

import re
from pathlib import Path

from deit_core.layout import (
    CHECKPOINTS_DIR,
    EXIT_BAD_CONFIG,
    EXIT_LEASE_EXPIRED,
    EXIT_PARITY_GATE,
    FINAL_CONFIG,
    FINAL_DIR,
    FINAL_WEIGHTS,
    LABELS,
    METRICS_FILE,
    PTE,
    PTL,
    REJECTED_SUFFIX,
    REPORT,
    TORCHSCRIPT,
)
from deit_core.predictions import VAL_PREDICTIONS, export_predictions_name
from server.vocabulary import EXPORT_PREDICTIONS_NAMES

__all__ = ["BAD_CONFIG", "EXIT_LEASE_EXPIRED", "EXPORT_GATE_FAILED", "EXPORT_FILES", "FINAL_CONFIG", "FINAL_WEIGHTS",
           "attempt_dir", "attempt_dir_name"]

# Exit codes (deit_core.layout). Anything else that is not 0 is a crash (a retry may help).
BAD_CONFIG = EXIT_BAD_CONFIG  # the engine rejects the config: no retry can fix it
EXPORT_GATE_FAILED = EXIT_PARITY_GATE  # the exporter's int8 parity gate refused the model
# EXIT_LEASE_EXPIRED: the run stopped itself because its lease file ran out

# A job's runs: <runs>/<job id>/attempt-<n>/ (and the same below <artifacts>/<job id>/).
ATTEMPT_DIR = re.compile(r"^attempt-(\d+)$")
JOB_JSON = "job.json"  # the resolved config the engine reads
OUTPUT_LOG = "output.log"  # stdout and stderr of every process of the run
METRICS = METRICS_FILE  # rank 0's events (deit_core.train)
FINAL = FINAL_DIR  # the trained model folder: FINAL_WEIGHTS + FINAL_CONFIG, what the engine loads
CHECKPOINTS = CHECKPOINTS_DIR  # last.pt and last.prev.pt (+ .sha256), what a later attempt resumes from
EXPORT_DIR = "export"
EXPORT_REJECTED = EXPORT_DIR + REJECTED_SUFFIX  # what an export refused by the gate wrote (its report)
EXPORT_ERROR = "export.error.json"  # the exporter's reason for failing, {"error": ...}
SLURM_SCRIPT = "slurm.sbatch"
CHECKPOINT_ARTIFACT = "checkpoint"  # the folder of a checkpoint artifact below the attempt's artifacts
TEACHER_CACHE_STORE = "teacher_cache"  # below the storage path: every teacher-output cache

EXPORT_FILES = {  # file in the export dir -> (artifact kind, format)
    PTL: ("mobile", "ptl"),
    PTE: ("mobile", "pte"),
    TORCHSCRIPT: ("server", "pt"),
    LABELS: ("metadata", "labels"),
    REPORT: ("report", "report"),
}
EXPORT_REPORT = REPORT
# Per-image predictions (deit_core.predictions): final/'s file (artifact name ``val``) and one per
# exported variant beside the report (artifact name: the variant), all of format ``predictions``.
FINAL_PREDICTIONS = VAL_PREDICTIONS
EXPORT_PREDICTIONS = {variant: export_predictions_name(variant) for variant in EXPORT_PREDICTIONS_NAMES}


def attempt_dir_name(attempt: int) -> str:
    return f"attempt-{attempt}"  # ATTEMPT_DIR matches it


def attempt_dir(root: Path, job_id: int, attempt: int) -> Path:
    """``<root>/<job id>/attempt-<n>``: a run directory (root = runs) or an attempt's artifacts."""
    return root / str(job_id) / attempt_dir_name(attempt)
