"""A finished job's export report (``report.json``), read from the artifact the worker registered.

Why apart: the sweep summary (trials' latency and size) and the ship card of a distill job both need
the exporter's measured numbers, and neither may import the other. The worker registers the report
as an artifact (format ``report``); its file is read here, once per request, and handed to pure code.
"""
from __future__ import annotations

import json
from typing import Any

from .models import Job


def read_report(job: Job) -> dict[str, Any] | None:
    """The exporter's report.json of a finished job (format ``report``, not a rejected one), or None."""
    for art in job.artifacts:
        if art.format == "report" and not (art.meta or {}).get("rejected"):
            try:
                with open(art.path) as f:
                    report = json.load(f)
            except (OSError, ValueError):
                return None
            return report if isinstance(report, dict) else None
    return None
