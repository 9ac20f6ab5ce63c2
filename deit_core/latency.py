"""Latency as a distribution, not one number: median and p10-p90 spread of timed runs, and when two
latencies are "the same speed".

Why: one p50 of a batch-1 CPU run moves with the machine's load, its frequency scaling and which
core the thread landed on. Two students of the same architecture measured 5.3 ms and 1.7 ms, and a
sweep's 1.70-1.79 ms points had a Pareto front drawn through that noise. So a latency is summarized
by its median *and* its spread over at least :data:`MIN_RUNS` runs, and two latencies whose p10-p90
spreads overlap are the same speed: neither may be called faster, and a front may not rank them.

Pure Python (no torch), so the export report, the ship card and the sweep's fronts use one rule.
"""
from __future__ import annotations

import statistics
from typing import Any, Mapping, Sequence

MIN_RUNS = 20  # fewer timed runs than this give a p10/p90 that is one or two samples: no spread to speak of


def summarize(times_ms: Sequence[float]) -> dict[str, Any]:
    """``p50`` (median), ``p10``, ``p90`` and ``spread`` (p90 - p10) in ms of the timed runs, and ``runs``.

    With one run every percentile is that run; the quantiles are numpy's default ("inclusive").
    """
    if not times_ms:
        raise ValueError("no timed runs")
    times = sorted(float(t) for t in times_ms)
    q = statistics.quantiles(times, n=10, method="inclusive") if len(times) > 1 else [times[0]] * 9
    p10, p90 = round(q[0], 3), round(q[8], 3)
    return {"p50": round(statistics.median(times), 3), "p10": p10, "p90": p90, "spread": round(p90 - p10, 3),
            "runs": len(times)}


def interval(latency: Mapping[str, Any] | None) -> tuple[float, float] | None:
    """The measured p10-p90 interval of a latency block. A report written before the spread was
    recorded has only p50 and p90: its interval is p50-p90. None when there is no p50."""
    if not latency or not isinstance(latency.get("p50"), (int, float)):
        return None
    p50 = float(latency["p50"])
    lo = latency.get("p10")
    hi = latency.get("p90")
    lo = float(lo) if isinstance(lo, (int, float)) else p50
    hi = float(hi) if isinstance(hi, (int, float)) else p50
    return min(lo, p50), max(hi, p50)


def same_speed(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    """Two latencies whose p10-p90 intervals overlap are the same speed (also when touching).
    False when either is unknown: "the same speed" is a measurement, not a default."""
    ia, ib = interval(a), interval(b)
    if ia is None or ib is None:
        return False
    return ia[0] <= ib[1] and ib[0] <= ia[1]


def faster(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    """``a`` is faster than ``b`` beyond the measured spread: a's p90 is below b's p10."""
    ia, ib = interval(a), interval(b)
    return ia is not None and ib is not None and ia[1] < ib[0]


def ratio(slow: Mapping[str, Any] | None, fast: Mapping[str, Any] | None) -> float | None:
    """How many times faster ``fast`` is than ``slow`` by their medians (None if either is unknown or 0)."""
    if not slow or not fast:
        return None
    s, f = slow.get("p50"), fast.get("p50")
    if not isinstance(s, (int, float)) or not isinstance(f, (int, float)) or s <= 0 or f <= 0:
        return None
    return round(float(s) / float(f), 2)


def ratio_range(slow: Mapping[str, Any] | None, fast: Mapping[str, Any] | None) -> tuple[float, float] | None:
    """The spread of :func:`ratio`: from ``slow``'s p10 over ``fast``'s p90 (the least favourable pair
    of the two p10-p90 intervals) to ``slow``'s p90 over ``fast``'s p10. None if either is unknown or 0."""
    a, b = interval(slow), interval(fast)
    if a is None or b is None or a[0] <= 0 or b[0] <= 0:
        return None
    return round(a[0] / b[1], 2), round(a[1] / b[0], 2)


def speedup(slow: Mapping[str, Any] | None, fast: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``{"speedup", "speedup_range", "same_speed"}`` of ``fast`` against ``slow`` (None if either is
    unknown): the median ratio, its range over the two p10-p90 spreads, and whether the spreads overlap."""
    r, rng = ratio(slow, fast), ratio_range(slow, fast)
    if r is None or rng is None:
        return None
    return {"speedup": r, "speedup_range": list(rng), "same_speed": same_speed(slow, fast)}


def speedup_text(entry: Mapping[str, Any] | None, than: str | None = None) -> str:
    """``2.10x faster (1.90-2.30)``, ``1.35x slower (1.28-1.43)`` or ``the same speed (0.95-1.10x)``:
    a :func:`speedup` entry in words; "faster"/"slower" only when the spreads do not overlap. An
    entry without ``speedup_range`` (a report from before it was recorded) shows the ratio alone.
    With ``than`` the comparison is named: ``... than fp32 eager``, ``the same speed (...) as ...``."""
    words = _speedup_words(entry)
    if than is None:
        return words
    if words == "not measured":
        return f"not measured against {than}"
    return f"{words} {'as' if entry.get('same_speed') else 'than'} {than}"


def _speedup_words(entry: Mapping[str, Any] | None) -> str:
    if not entry or not isinstance(entry.get("speedup"), (int, float)) or entry["speedup"] <= 0:
        return "not measured"
    r, rng = float(entry["speedup"]), entry.get("speedup_range")
    lo, hi = (float(rng[0]), float(rng[1])) if isinstance(rng, (list, tuple)) and len(rng) == 2 and min(rng) > 0 else (None, None)
    if entry.get("same_speed"):
        return "the same speed" + (f" ({lo:.2f}-{hi:.2f}x)" if lo is not None else f" ({r:.2f}x)")
    if r >= 1:
        return f"{r:.2f}x faster" + (f" ({lo:.2f}-{hi:.2f})" if lo is not None else "")
    return f"{1 / r:.2f}x slower" + (f" ({1 / hi:.2f}-{1 / lo:.2f})" if lo is not None else "")
