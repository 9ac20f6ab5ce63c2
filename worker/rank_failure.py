"""Which rank really failed: reading torchrun's failure summary from a run's log.

When one rank dies (``kill -9``, the OOM killer, a segfault), the others fail a moment later with
gloo/NCCL "connection reset" errors, and rank 0 even records that as the run's error. The root
cause is in torchrun's summary at the end of the log::

    Root Cause (first observed failure):
    [0]:
      rank      : 1 (local_rank: 1)
      exitcode  : -9 (pid: 18231)  (SIGKILL)
      traceback : Signal 9 (SIGKILL) received by PID 18231

A rank killed by a signal other than SIGTERM (which torchrun itself sends the survivors) is the
root cause, whatever the timestamps say (they have one-second resolution, so a tie may name the
wrong rank); otherwise the engine's own error, otherwise torchrun's root-cause entry.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ENTRY = re.compile(r"^\s*\[\d+\]:\s*$")
FIELD = re.compile(r"^\s*(time|host|rank|exitcode|error_file|traceback)\s*:\s?(.*)$")
EXITCODE = re.compile(r"^(-?\d+)(?:\s*\(pid:\s*(\d+)\))?(?:\s*\((SIG\w+)\))?")
AGENT_SIGNALS = {"SIGTERM"}  # what torchrun sends the surviving ranks when one fails
TAIL_BYTES = 64 << 10


@dataclass
class RankFailure:
    rank: str
    exitcode: int
    pid: str = ""
    signal: str = ""
    traceback: str = ""
    root: bool = False

    def describe(self) -> str:
        pid = f", pid {self.pid}" if self.pid else ""
        if self.signal:
            return f"rank {self.rank} was killed by {self.signal} (exit code {self.exitcode}{pid})"
        detail = f": {self.traceback}" if self.traceback and self.traceback != "<N/A>" else ""
        return f"rank {self.rank} exited with code {self.exitcode}{pid}{detail}"


def _summary_line(entry: dict[str, str]) -> str:
    """The traceback field's one-line gist: the exception line of a Python traceback."""
    tb = entry.get("traceback", "").strip()
    if tb.startswith("Traceback") and entry.get("traceback_last"):
        tb = entry["traceback_last"]
    return tb[:300]


def parse_failures(text: str) -> list[RankFailure]:
    """Every entry of torchrun's last failure summary in ``text`` (root-cause entry flagged)."""
    start = text.rfind("Failures:")
    if start < 0:
        start = text.rfind("Root Cause (first observed failure):")
    if start < 0:
        return []
    failures: list[RankFailure] = []
    current: dict[str, str] | None = None
    root = False

    def close() -> None:
        if current and "rank" in current and "exitcode" in current:
            m = EXITCODE.match(current["exitcode"])
            if m:
                failures.append(RankFailure(rank=current["rank"].split()[0], exitcode=int(m.group(1)),
                                            pid=m.group(2) or "", signal=m.group(3) or "",
                                            traceback=_summary_line(current), root=root))

    for line in text[start:].splitlines():
        if line.startswith("Root Cause"):
            close()
            current, root = None, True
        elif ENTRY.match(line):
            close()
            current = {}
        elif current is not None and line.startswith("="):
            break
        elif current is not None and (m := FIELD.match(line)):
            current[m.group(1)] = m.group(2).strip()
        elif current is not None and line.strip() and not line.startswith("-") and "traceback" in current:
            current["traceback_last"] = line.strip()  # a Python traceback from the rank's error file
    close()
    return failures


def read_log_tail(log_path: Path) -> str:
    """The last :data:`TAIL_BYTES` of a run's log ('' when it cannot be read): torchrun's summary is there."""
    try:
        with open(log_path, "rb") as f:
            f.seek(max(0, f.seek(0, 2) - TAIL_BYTES))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def failure_reason(log_path: Path, engine_error: str | None) -> str | None:
    """The reason to report for a failed distributed run (see the module docstring), or None."""
    return failure_reason_in(read_log_tail(log_path), engine_error)


def failure_reason_in(text: str, engine_error: str | None) -> str | None:
    """:func:`failure_reason` on the log's text (no file access, so the outcome of an attempt is a pure function)."""
    failures = parse_failures(text)
    killed = sorted((f for f in failures if f.signal and f.signal not in AGENT_SIGNALS), key=lambda f: not f.root)
    if killed:
        others = sorted({f.rank for f in failures} - {killed[0].rank})
        then = f"; the other rank(s) ({', '.join(others)}) stopped after it" if others else ""
        return killed[0].describe() + then
    if engine_error:
        return engine_error
    root = next((f for f in failures if f.root), None)
    return root.describe() if root else None
