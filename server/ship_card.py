"""The ship card: teacher, distilled student and its baseline side by side, and the one sentence
that says what to ship.

Why: the numbers a practitioner decides on (top-1 with its interval, the exported model's size and
latency, the gain over the same student trained alone) were spread over three job pages, each
latency a bare p50 with no CPU named, and the gain a green "+1.6 pt" with no interval. The card puts
them in one table with one sentence whose every comparison is a measured one: "faster" only beyond
the measured p10-p90 spread (:mod:`deit_core.latency`), "above the same student trained alone" only
when the gain is ``significant`` (across seeds, :mod:`deit_core.paired_stats`).

Pure: rows and dicts in (the jobs' numbers, their export reports, the job JSON's ``baseline``), a
dict out. The caller (``server.serializers``) reads the database and the report files.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

from deit_core import latency
from deit_core.layout import PTL

SHIPPED_FILE = PTL  # the card compares the files an app ships: the int8 Lite Interpreter models
SAME_SIZE = 1.05  # sizes within 5% of each other are "the same size" (a file size has no noise, but 1.02x is no news)
Z95 = 1.959964


def top1_ci95(top1: float | None, n_images: int | None) -> list[float] | None:
    """95% Wilson score interval (points) of a top-1 measured on ``n_images`` images: how far the val
    set's luck alone could move it. Wilson rather than Wald: it stays inside 0-100 and is not a
    zero-width interval at 100% or 0%."""
    if top1 is None or not n_images or n_images < 1:
        return None
    p, n = top1 / 100.0, n_images
    centre = (p + Z95 ** 2 / (2 * n)) / (1 + Z95 ** 2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95 ** 2 / (4 * n * n)) / (1 + Z95 ** 2 / n)
    return [round(100 * max(0.0, centre - half), 1), round(100 * min(1.0, centre + half), 1)]


def params_m(report: Mapping[str, Any] | None) -> float | None:
    """Millions of parameters, from the fp32 safetensors size the report records (4 bytes a parameter;
    the header is a few kB, well under the 0.01 M shown)."""
    size = ((report or {}).get("model") or {}).get("fp32_weights_bytes")
    return round(size / 4 / 1e6, 2) if isinstance(size, (int, float)) and size > 0 else None


def card_row(role: str, job_id: int | None, model: str | None, top1: float | None, report: Mapping[str, Any] | None,
             **extra: Any) -> dict[str, Any]:
    """One row: the job's top-1 (the number shown everywhere) with its interval over the report's val
    images, and the exported ``.ptl``'s latency and size from the report (None before an export)."""
    ptl = ((report or {}).get("variants") or {}).get("ptl") or {}
    n_images = ((report or {}).get("val") or {}).get("images")
    lat = ptl.get("latency_ms")
    return {"role": role, "job_id": job_id, "model": model or ((report or {}).get("model") or {}).get("architecture"),
            "params_m": params_m(report), "top1": top1, "top1_ci95": top1_ci95(top1, n_images), "n_images": n_images,
            "latency_ms": ({k: lat.get(k) for k in ("p50", "p10", "p90", "runs", "threads")} if lat else None),
            "size_bytes": ptl.get("size_bytes"), "file": SHIPPED_FILE if ptl else None,
            "cpu": (report or {}).get("cpu"), "int8_vs_fp32": ptl_speedups(report), **extra}


def ptl_speedups(report: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """What int8 buys the shipped ``.ptl``, from the report's ``latency.int8_vs_fp32``: against the fp32
    model in the same runtime (the Lite Interpreter) and against fp32 eager, each ``{"speedup",
    "speedup_range", "same_speed"}`` (None when not measured). None for a report without the block.

    Why on the card: on a CPU with AMX, fp32 eager is fast and an int8 file can be slower than it while
    still faster than its fp32 conversion; one ratio alone tells a reader the wrong story."""
    cmp = ((report or {}).get("latency") or {}).get("int8_vs_fp32")
    if not isinstance(cmp, Mapping):
        return None
    return {"same_runtime": (cmp.get("same_runtime") or {}).get("lite_interpreter"),
            "vs_fp32_eager": (cmp.get("vs_fp32_eager") or {}).get("ptl")}


def _x(ratio: float) -> str:
    return f"{ratio:.1f}x"


def _pt(x: float) -> str:
    return f"{x:+.1f}".replace("+0.0", "0.0").replace("-0.0", "0.0")


def same_cpu(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    """Latencies compare only when measured on the same CPU model, ISA and thread count."""
    keys = ("model", "isa", "threads")
    return bool(a) and bool(b) and all(a.get(k) == b.get(k) for k in keys)  # type: ignore[union-attr]


def size_phrase(teacher: Mapping[str, Any], student: Mapping[str, Any]) -> str | None:
    t, s = teacher.get("size_bytes"), student.get("size_bytes")
    if not t or not s:
        return None
    if t / s >= SAME_SIZE:
        return f"{_x(t / s)} smaller"
    if s / t >= SAME_SIZE:
        return f"{_x(s / t)} larger"
    return "the same size"


def speed_phrase(teacher: Mapping[str, Any], student: Mapping[str, Any]) -> str | None:
    """"2.7x faster" / "2.7x slower" only beyond the measured spreads; "the same speed" when they
    overlap; None when unknown or measured on different CPUs (no honest comparison)."""
    t, s = teacher.get("latency_ms"), student.get("latency_ms")
    if not t or not s or not same_cpu(teacher.get("cpu"), student.get("cpu")):
        return None
    if latency.same_speed(t, s):
        return "the same speed"
    ratio = latency.ratio(t, s)
    if ratio is None:
        return None
    if latency.faster(s, t):
        return f"{_x(ratio)} faster"
    return f"{_x(1 / ratio)} slower"


def teacher_clause(teacher: Mapping[str, Any] | None, student: Mapping[str, Any]) -> str | None:
    """"is 3.9x smaller and 2.7x faster than its teacher, 1.8 pt below it" from what both rows have."""
    if teacher is None:
        return None
    comparatives, same = [], []
    for phrase in (size_phrase(teacher, student), speed_phrase(teacher, student)):
        if phrase is None:
            continue
        (same if phrase.startswith("the same") else comparatives).append(phrase)
    parts = []
    if comparatives:
        parts.append(" and ".join(comparatives) + " than its teacher")
    if same:
        parts.append(" and ".join(same) + " as its teacher")
    t, s = teacher.get("top1"), student.get("top1")
    if isinstance(t, (int, float)) and isinstance(s, (int, float)):
        d = round(s - t, 1)
        it = "it" if parts else "its teacher"
        parts.append(f"level with {it} in top-1" if d == 0 else f"{abs(d):.1f} pt {'below' if d < 0 else 'above'} {it}")
    return ("is " + ", ".join(parts)) if parts else None


def gain_clause(baseline: Mapping[str, Any] | None, student: Mapping[str, Any], alone: Mapping[str, Any] | None) -> str | None:
    """The gain over the same student trained alone, with its interval and in the verdict's words:
    "above"/"below" only when ``significant``; otherwise "no measurable difference" (or, one seed whose
    interval over images excludes 0, the gain on these images with "training noise not measured")."""
    if not baseline:
        return None
    if baseline.get("pending"):
        return f"the same student trained alone: {baseline['pending']}"
    gain, ci = baseline.get("gain"), baseline.get("gain_ci95")
    if not isinstance(gain, (int, float)):
        state = baseline.get("state")
        return None if state is None else f"the same student trained alone is {state}"
    if not ci or len(ci) != 2:  # the shape before intervals were computed: the numbers, no claim
        mine, theirs = student.get("top1"), (alone or {}).get("top1", baseline.get("top1"))
        if isinstance(mine, (int, float)) and isinstance(theirs, (int, float)):
            return f"{mine:.1f}% against {theirs:.1f}% for the same student trained alone (interval not computed)"
        return "the gain over the same student trained alone has no interval (interval not computed)"
    lo, hi = ci
    if baseline.get("significant"):  # the interval excludes 0: say it as a distance on one side
        near, far = sorted((abs(lo), abs(hi)))
        return f"{abs(gain):.1f} pt ({near:.1f} to {far:.1f}) {'above' if gain > 0 else 'below'} the same student trained alone"
    if lo <= 0 <= hi:
        return f"no measurable difference from the same student trained alone (95% CI {_pt(lo)} to {_pt(hi)} pt)"
    return (f"{_pt(gain)} pt (95% CI {_pt(lo)} to {_pt(hi)} pt) against the same student trained alone on these images, "
            f"one seed: training noise not measured")


def sentence(teacher: Mapping[str, Any] | None, student: Mapping[str, Any], alone: Mapping[str, Any] | None,
             baseline: Mapping[str, Any] | None) -> str:
    """"the distilled student is 3.9x smaller and 2.7x faster than its teacher, 1.8 pt below it, and 1.6 pt
    (0.3 to 2.9) above the same student trained alone", from what is measured; nothing is claimed that
    is not."""
    vs_teacher, vs_alone = teacher_clause(teacher, student), gain_clause(baseline, student, alone)
    head = "the distilled student"
    if student.get("at_chance"):
        return f"{head} ended at chance: its top-1 is that of guessing, nothing to ship"
    if vs_teacher and vs_alone:
        return f"{head} {vs_teacher}, and {vs_alone}"
    if vs_teacher:
        return f"{head} {vs_teacher}"
    if vs_alone:
        top1 = student.get("top1")
        lead = f"{head} reaches {top1:.1f}% top-1" if isinstance(top1, (int, float)) else head
        return f"{lead}; {vs_alone}"
    top1 = student.get("top1")
    return f"{head} reaches {top1:.1f}% top-1" if isinstance(top1, (int, float)) else f"{head} has no measured top-1 yet"


def ship_card(teacher: dict[str, Any] | None, student: dict[str, Any], alone: dict[str, Any] | None,
              baseline: Mapping[str, Any] | None) -> dict[str, Any]:
    """``{"rows": [...], "cpu": ..., "sentence": ...}``: the rows in teacher, student, baseline order
    (those that exist), the CPU the student's latency was measured on, and the sentence."""
    rows = [r for r in (teacher, student, alone) if r is not None]
    return {"rows": rows, "cpu": card_cpu(student.get("cpu")), "sentence": sentence(teacher, student, alone, baseline)}


def card_cpu(cpu: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The CPU line's fields: model, ISA features, threads and the torch version that timed the latency."""
    if not cpu:
        return None
    return {"model": cpu.get("model"), "isa": cpu.get("isa") or [], "threads": cpu.get("threads"), "torch": cpu.get("torch")}


def trial_row(trial: Mapping[str, Any]) -> dict[str, Any]:
    """A sweep trial (a row of ``server.sweeps.summarize``) as a card row, role ``front``: its ``.ptl``'s
    top-1 (the fronts' accuracy), latency spread, size and CPU."""
    lat = trial.get("latency") or ({"p50": trial["latency_ms"]} if isinstance(trial.get("latency_ms"), (int, float)) else None)
    top1 = trial.get("ptl_top1") if trial.get("ptl_top1") is not None else trial.get("top1")
    return {"role": "front", "job_id": trial.get("job_id"), "trial": trial.get("number"),
            "model": (trial.get("params") or {}).get("student_model"), "params_m": None, "top1": top1, "top1_ci95": None,
            "n_images": None, "latency_ms": ({k: lat.get(k) for k in ("p50", "p10", "p90", "runs", "threads")} if lat else None),
            "size_bytes": trial.get("size_bytes"), "file": SHIPPED_FILE, "cpu": trial.get("cpu"),
            "int8_vs_fp32": None, "at_chance": bool(trial.get("at_chance"))}


def sweep_card(teacher: dict[str, Any] | None, summary: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ship card of a sweep: its teacher and the trials on the accuracy-latency front (cheapest
    first; the front already ignores differences inside the measured spread), each compared with the
    teacher in the same words as a distill job's card. None before any trial is on the front."""
    front = list((summary.get("fronts") or {}).get("latency") or [])
    by_id = {t.get("job_id"): t for t in summary.get("trials") or []}
    rows = [trial_row(by_id[i]) for i in front if i in by_id]
    if not rows:
        return None
    parts = []
    for r in rows:
        name = f"trial {r['trial']} (job {r['job_id']})"
        if r["at_chance"]:
            parts.append(f"{name} ended at chance")
            continue
        vs = teacher_clause(teacher, r)
        lat = (r.get("latency_ms") or {}).get("p50")
        parts.append(f"{name} {vs}" if vs else f"{name} reaches {r['top1']:.1f}% at {lat:.2f} ms" if lat is not None
                     and r["top1"] is not None else name)
    head = f"{len(rows)} trial{'s' if len(rows) != 1 else ''} on the accuracy-latency front (same-speed differences ignored)"
    cpu = next((r["cpu"] for r in rows if r.get("cpu")), None)
    return {"rows": [r for r in (teacher, *rows) if r is not None], "cpu": card_cpu(cpu),
            "sentence": f"{head}: " + "; ".join(parts)}
