"""The engine's fixed names and numbers, defined once: exit codes, run-directory and export file names.

The worker reads what a run leaves behind (its exit code, ``metrics.jsonl``, ``final/``, the export's
``report.json``) and the service serves it, so a name spelt twice is a contract that can drift. Every
module of ``deit_core``, ``server``, ``worker``, ``distillery`` and ``benchmarks`` imports these from
here; ``tests/test_constants.py`` fails when one is written out again elsewhere. This module imports
nothing, so anything may import it (``deit_core`` may not import the service; the service may import
the engine's vocabulary).
"""
from __future__ import annotations

# Exit codes of a training run (``deit_core.train``) and of the exporter (``deit_core.export``).
EXIT_OK = 0
EXIT_FAILED = 1  # any other failure: the worker may run it again
EXIT_BAD_CONFIG = 2  # the config (or the exporter's input) is wrong: no retry can fix it
EXIT_PARITY_GATE = 3  # export only: int8 fell too far below fp32; the output is kept at OUT.rejected/
LAUNCHER_VARIABLE = "DEIT_CORE_LAUNCHER"  # names a rank's launcher when it is not torchrun (deit_core.local_ranks)
EXIT_LEASE_EXPIRED = 75  # EX_TEMPFAIL: the service's lease ran out, the run was stopped, not broken

# The largest 32-bit signed integer: ids are INTEGER columns (a larger one is a 404, never a database
# error), and a seed must fit the samplers that take one.
MAX_INT32 = 2**31 - 1

# A run directory (``deit_core.train --output DIR``).
METRICS_FILE = "metrics.jsonl"  # one JSON event per line (deit_core.events)
TRAIN_LOG = "train.log"
LEASE_FILE = "lease.json"  # written by the worker, read by the run (deit_core.lease)
CHECKPOINTS_DIR = "checkpoints"
LAST_CHECKPOINT = "last.pt"
PREV_CHECKPOINT = "last.prev.pt"  # the last.pt the newest one replaced (deit_core.checkpoint)
BEST_CHECKPOINT = "best.pt"
FINAL_DIR = "final"  # everything needed to rebuild and run the trained model
FINAL_CONFIG = "config.json"
FINAL_WEIGHTS = "model.safetensors"

# An export directory (``deit_core.export --output OUT``).
PTL = "model.ptl"  # int8, PyTorch Lite Interpreter
PTE = "model.pte"  # int8, ExecuTorch (XNNPACK)
TORCHSCRIPT = "model_int8.pt"  # int8 TorchScript for server CPUs
LABELS = "labels.json"
REPORT = "report.json"
REJECTED_SUFFIX = ".rejected"  # OUT.rejected/: an export the parity gate refused
EXPORT_FILES = (PTL, PTE, TORCHSCRIPT, LABELS, REPORT)
