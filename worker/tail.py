"""Following a run's ``metrics.jsonl`` while it is being written.

:class:`MetricsTail` reads only whole lines (a line still being written is kept for the next
read); :class:`RunProgress` folds events into what the job row shows (progress, latest metrics)
plus the metric points to insert.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PROGRESS_KEYS = ("epoch", "epochs", "step", "steps_per_epoch", "eta_s")
NOT_METRICS = {"event", "time", "epoch", "epochs", "step", "steps_per_epoch", "eta_s", "path", "best", "final",
               "kind", "architecture", "start_epoch", "message", "field", "exit_code"}
# What the page says the run is doing, from the first event on (``phase`` events name their own).
PHASE_OF_EVENT = {"start": "first epoch", "teacher": "teacher evaluated", "step": "training", "epoch": "training",
                  "done": "training done"}
ERROR_CHARS = 300


def readable_error(message: str) -> str:
    """One sentence for the job's ``error``: a 4,000-character state_dict dump says what it means, and
    anything else is cut to its first line; the whole message stays in the run's log."""
    if "loading state_dict" in message or "size mismatch for" in message:
        return ("the checkpoint does not fit the model (other layer names or shapes: another architecture, "
                "number of classes or image size); the full list is in the log")
    first = message.strip().splitlines()[0] if message.strip() else "training failed"
    if len(first) > ERROR_CHARS:
        first = first[:ERROR_CHARS].rsplit(" ", 1)[0] + " ..."
    return first + (" (details in the log)" if first != message.strip() else "")


class MetricsTail:
    """Incremental reader of a JSON-lines file that another process appends to."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self._partial = b""

    def read_new(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            chunk = f.read()
            self.offset = f.tell()
        data = self._partial + chunk
        *lines, self._partial = data.split(b"\n")
        events = []
        for line in lines:
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                log.warning("skipping a malformed metrics line: %r", line[:200])
                continue
            if isinstance(obj, dict) and "event" in obj:
                events.append(obj)
        return events


@dataclass
class RunProgress:
    """What the job row shows, updated from events."""

    progress: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    done: bool = False

    def _phase(self, kind: Any, ev: dict[str, Any]) -> None:
        """What the run is doing (``progress.phase``), its class count, and the teacher's top-1 as
        soon as it is known, so the page says more than "waiting" before the first step."""
        if kind == "phase" or kind in PHASE_OF_EVENT:
            self.progress["phase"] = ev.get("phase") if kind == "phase" else PHASE_OF_EVENT[kind]
        if kind == "start" and isinstance(ev.get("classes"), list):
            self.progress["num_classes"] = len(ev["classes"])
        if kind in ("teacher", "phase"):
            self.metrics.update({k: v for k, v in ev.items() if k not in NOT_METRICS and k != "phase"
                                 and isinstance(v, (int, float)) and not isinstance(v, bool)})

    def apply(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Fold ``events`` in; return metric points ``{name, epoch, step, value, time}`` to store."""
        points: list[dict[str, Any]] = []
        for ev in events:
            kind = ev.get("event")
            self._phase(kind, ev)
            if kind in ("step", "epoch"):
                for k in PROGRESS_KEYS:
                    if ev.get(k) is not None:
                        self.progress[k] = ev[k]
                epochs, spe = self.progress.get("epochs"), self.progress.get("steps_per_epoch")
                epoch, step = self.progress.get("epoch"), self.progress.get("step")
                global_step = 0
                if epochs and spe and epoch and step is not None:
                    global_step = (epoch - 1) * spe + step
                    self.progress["fraction"] = round(min(1.0, global_step / (epochs * spe)), 4)
                if kind == "epoch" and epoch == epochs:
                    self.progress["eta_s"] = 0
                for name, value in ev.items():
                    if name in NOT_METRICS or isinstance(value, bool) or not isinstance(value, (int, float)):
                        continue
                    self.metrics[name] = value
                    points.append({"name": name, "epoch": epoch or 0, "step": global_step, "value": float(value),
                                   "time": ev.get("time")})
            elif kind == "error":
                self.error = readable_error(ev.get("message") or "training failed")
            elif kind == "done":
                self.done = True
                for name, value in ev.items():
                    if name not in NOT_METRICS and isinstance(value, (int, float)) and not isinstance(value, bool):
                        self.metrics[name] = value
        return points
