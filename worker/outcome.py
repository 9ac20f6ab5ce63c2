"""How a step of an attempt ends, as a pure function of what it left behind.

A step (training, then the export) ends with an exit code, the reasons its processes wrote (the
end of ``output.log`` with torchrun's failure summary, rank 0's error event, the exporter's
``export.error.json``, Slurm's state) and maybe a stop request (a cancel or a sweep's prune, the
worker shutting down, the lease lost). :func:`attempt_outcome` maps those to what the attempt does
next -- go on, succeed, fail, start a new attempt, end cancelled or pruned, hand the job back, leave
a Slurm job for the next worker, or write nothing -- with the reason the job row will show. It reads
no files and touches no database, so every branch is a fast unit test (``tests/test_runner_units.py``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from server.vocabulary import CANCELLED, EXPORTING, FAILED, IN_PROGRESS_STATES, SUCCEEDED

from .rank_failure import failure_reason_in
from .run_contract import BAD_CONFIG, EXIT_LEASE_EXPIRED, EXPORT_GATE_FAILED

TRAIN, EXPORT = "train", "export"  # the steps
# Stop requests: what made the worker stop (or leave) the run before it ended on its own.
CANCEL, WORKER_STOPPING, LEASE_LOST = "cancel", "worker_stopping", "lease_lost"
# Actions: what the attempt does next.
CONTINUE = "continue"  # training ended well: checkpoint and export next
SUCCEED = "succeed"  # the export ended well: register its files, then succeeded
FAIL = "fail"  # failed now: no retry can help
RETRY = "retry"  # a crash: a new attempt while the job has attempts left, else failed
STOP = "stop"  # cancelled by a user, or pruned by its sweep
REQUEUE = "requeue"  # the worker is stopping: the job goes back to the queue as a new attempt
DETACH = "detach"  # the worker is stopping and leaves the Slurm job running for the next worker
LOSE = "lose"  # the lease is gone: nothing more may be written for this attempt


@dataclass(frozen=True)
class StopRequest:
    """Why the worker stopped (or left) the run. ``state``/``reason``: how a cancel ends (cancelled,
    or pruned with the pruner's words, ``lifecycle.stop_outcome``). ``detach``: a stopping worker
    left the run going (a Slurm job outlives its worker)."""

    kind: str
    state: str = CANCELLED
    reason: str = "cancelled by user"
    detach: bool = False


@dataclass(frozen=True)
class StepErrors:
    """What the step's processes said about how they ended (all optional)."""

    log_tail: str = ""  # the end of output.log (torchrun's failure summary, the last lines)
    engine_error: str | None = None  # training: rank 0's error event (worker.tail.RunProgress.error)
    error_file: str = ""  # export: the contents of export.error.json
    launcher: str | None = None  # Slurm's words for a job that did not complete (worker.slurm.describe_end)


@dataclass(frozen=True)
class Outcome:
    action: str
    state: str | None = None  # the job's final state (SUCCEED, FAIL, STOP)
    reason: str | None = None  # the job's error
    from_states: tuple[str, ...] = IN_PROGRESS_STATES  # the states the final transition starts from
    fail_children: bool = False  # FAIL: the jobs waiting on this one fail; STOP: they are cancelled
    keep_rejected_report: bool = False  # the gate's report is registered though the export failed


def attempt_outcome(step: str, exit_code: int | None, errors: StepErrors = StepErrors(),
                    stop: StopRequest | None = None) -> Outcome:
    """What attempt does after ``step`` ended with ``exit_code`` (None: it was stopped) and ``errors``,
    or was stopped by ``stop`` (which wins: the exit code of a stopped run says nothing)."""
    if stop is not None:
        return _stopped(stop)
    if exit_code is None:
        raise ValueError("a step that was not stopped has an exit code")
    if exit_code == 0:
        return Outcome(CONTINUE) if step == TRAIN else Outcome(SUCCEED, SUCCEEDED, from_states=(EXPORTING,))
    return _training_failed(exit_code, errors) if step == TRAIN else _export_failed(exit_code, errors)


def _stopped(stop: StopRequest) -> Outcome:
    if stop.kind == LEASE_LOST:
        return Outcome(LOSE)
    if stop.kind == WORKER_STOPPING:
        return Outcome(DETACH if stop.detach else REQUEUE)
    if stop.kind == CANCEL:
        return Outcome(STOP, stop.state, stop.reason, fail_children=True)
    raise ValueError(f"unknown stop request {stop.kind!r}")


def _training_failed(rc: int, errors: StepErrors) -> Outcome:
    """A run that crashed is started again (from its last checkpoint) up to ``max_attempts`` in a
    row; a config the engine rejects fails at once; a run that stopped itself because its lease file
    ran out has lost its lease."""
    if rc == EXIT_LEASE_EXPIRED:
        return Outcome(LOSE)
    # torchrun's summary names a rank that was killed (the others then fail with gloo errors)
    cause = failure_reason_in(errors.log_tail, errors.engine_error)
    reason = f"training failed (exit {rc}): {cause or last_lines(errors.log_tail) or f'exit code {rc}'}"
    if errors.launcher is not None:  # Slurm's state and reason come first
        reason = f"{errors.launcher}; {reason}"
    if rc == BAD_CONFIG:
        return Outcome(FAIL, FAILED, reason, fail_children=True)
    return Outcome(RETRY, reason=reason)


def _export_failed(rc: int, errors: StepErrors) -> Outcome:
    """The exporter says why in its error file; exit 3 is the int8 parity gate (its report is kept)."""
    err = error_file_reason(errors.error_file) or \
        f"exit code {rc}, no reason recorded; see the log ({last_lines(errors.log_tail)})"
    if rc == EXPORT_GATE_FAILED:
        return Outcome(FAIL, FAILED, f"export parity gate failed: {err}", from_states=(EXPORTING,),
                       keep_rejected_report=True)
    return Outcome(FAIL, FAILED, f"export failed (exit {rc}): {err}", from_states=(EXPORTING,))


def error_file_reason(text: str) -> str:
    """The reason a child process recorded in its JSON error file (``{"error": ...}``), or ''."""
    try:
        data = json.loads(text)
    except ValueError:
        return ""
    return str(data.get("error") or "") if isinstance(data, dict) else ""


def last_lines(log_text: str, n: int = 5) -> str:
    """The log's last ``n`` non-empty lines, without the commands the worker wrote there (``$ ...``)."""
    lines = [ln for ln in log_text.splitlines() if ln.strip() and not ln.startswith("$ ")]
    return " | ".join(lines[-n:])
