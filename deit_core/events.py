"""``metrics.jsonl``: one JSON object per line, flushed as written, read live by the service."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class MetricsLog:
    """Appends events to ``metrics.jsonl``; a no-op on ranks other than 0 (rank 0 alone writes)."""

    def __init__(self, path: Path | None):
        self._f = open(path, "a", buffering=1) if path is not None else None

    def emit(self, event: str, **fields: Any) -> dict[str, Any]:
        record = {"event": event, "time": round(time.time(), 3), **{k: _clean(v) for k, v in fields.items()}}
        if self._f is not None:
            self._f.write(json.dumps(record) + "\n")
            self._f.flush()
        return record

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
