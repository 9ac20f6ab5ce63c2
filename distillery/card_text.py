"""The gain, the latency and the ship card in terminal text: the words the dashboard uses, for
``distillery watch``, ``jobs``, ``diff`` and ``sweep watch``.

Why apart: four commands print these, and each must say the same thing as the job page: a gain
always with its interval and verdict ("interval not computed" for an older record), a latency with
its p10-p90 spread and the CPU it was measured on, "at chance" instead of a plain "succeeded".
No Flask, Celery or torch.
"""
from __future__ import annotations

from typing import Any

from deit_core.cpu_info import describe as cpu_text
from deit_core.latency import speedup_text

from .text_format import format_size, format_table

__all__ = ["cpu_text", "gain_line", "latency_text", "ship_card_text", "speedup_line", "speedup_text", "state_text"]


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def state_text(job: dict[str, Any]) -> str:
    """The state a badge shows: "at chance" for a run that succeeded at the top-1 of guessing."""
    state = str(job.get("state") or "-")
    return "at chance" if state == "succeeded" and job.get("at_chance") else state


def gain_line(baseline: dict[str, Any] | None, top1: Any = None) -> str | None:
    """The distillation gain with its 95% interval and verdict; the two top-1s and "interval not
    computed" when the record has no interval; None without a baseline."""
    if not baseline:
        return None
    if baseline.get("pending"):
        return f"distillation gain: {baseline['pending']}"
    gain, ci = baseline.get("gain"), baseline.get("gain_ci95")
    if _is_num(gain) and isinstance(ci, list) and len(ci) == 2:
        over = f"over {baseline.get('seeds')} seeds" if baseline.get("ci_over") == "seeds" else "over images, one seed"
        verdict = f": {baseline['verdict']}" if baseline.get("verdict") else ""
        return f"distillation gain {gain:+.1f} pt (95% CI {ci[0]:+.1f} to {ci[1]:+.1f} pt, {over}){verdict}"
    if _is_num(gain):
        theirs = baseline.get("top1")
        mine = f"{top1:.1f}%" if _is_num(top1) else "-"
        return (f"top-1 {mine} against {theirs:.1f}% for the same student without a teacher (job {baseline.get('job_id')}; "
                f"interval not computed)" if _is_num(theirs) else "distillation gain: interval not computed")
    return f"distillation gain: waiting for both runs (baseline job {baseline.get('job_id')} {baseline.get('state')})"


def latency_text(lat: dict[str, Any] | None) -> str:
    """``5.02 ms (4.80-5.40)``: the median and the p10-p90 spread; ``-`` when not measured."""
    if not lat or not _is_num(lat.get("p50")):
        return "-"
    spread = f" ({lat['p10']:.2f}-{lat['p90']:.2f})" if _is_num(lat.get("p10")) and _is_num(lat.get("p90")) else ""
    return f"{lat['p50']:.2f} ms{spread}"


ROLE = {"teacher": "teacher", "student": "distilled student", "baseline": "student alone"}


def speedup_line(rows: list[dict[str, Any]]) -> str | None:
    """``int8 .ptl vs fp32: distilled student 2.10x faster (1.90-2.30) than its fp32 .ptl, 3.05x faster
    (2.80-3.30) than fp32 eager; ...``: each row's ``int8_vs_fp32`` (None when no row has one)."""
    parts = []
    for r in rows:
        s = r.get("int8_vs_fp32") or {}
        if not s.get("same_runtime") and not s.get("vs_fp32_eager"):
            continue
        role = f"trial {r.get('trial')}" if r.get("role") == "front" else ROLE.get(r.get("role"), str(r.get("role")))
        parts.append(f"{role} {speedup_text(s.get('same_runtime'), 'its fp32 .ptl')}, "
                     f"{speedup_text(s.get('vs_fp32_eager'), 'fp32 eager')}")
    return ("int8 .ptl vs fp32: " + "; ".join(parts)) if parts else None


def ship_card_text(card: dict[str, Any] | None) -> str | None:
    """The job JSON's ``ship_card`` as the sentence, a table and the CPU line (None without a card)."""
    if not card:
        return None
    rows = []
    for r in card.get("rows") or []:
        ci = r.get("top1_ci95")
        top1 = "-" if not _is_num(r.get("top1")) else f"{r['top1']:.1f}" + (f" ({ci[0]:.1f}-{ci[1]:.1f})" if ci else "")
        if r.get("role") == "teacher" and _is_num(r.get("teacher_train_top1")):
            top1 += f", {r['teacher_train_top1']:.1f} on training crops"
        job = "-" if r.get("job_id") is None else str(r["job_id"]) + (" (at chance)" if r.get("at_chance") else "")
        role = f"trial {r.get('trial')} (front)" if r.get("role") == "front" else ROLE.get(r.get("role"), str(r.get("role")))
        rows.append([role, job, str(r.get("model") or "-").replace("_distilled_patch16_224", ""),
                     "-" if not _is_num(r.get("params_m")) else f"{r['params_m']:.2f}", top1,
                     latency_text(r.get("latency_ms")), format_size(r["size_bytes"]) if r.get("size_bytes") else "-"])
    lines = [card.get("sentence") or "",
             format_table(rows, ["", "job", "model", "params M", "top-1 % (95% CI)", ".ptl p50 (p10-p90)", ".ptl size"]),
             f"latency: batch 1 on {cpu_text(card.get('cpu'))}; spreads that overlap are the same speed"]
    speedups = speedup_line(card.get("rows") or [])
    if speedups:
        lines.append(speedups)
    warning = next((r.get("fitness_warning") for r in card.get("rows") or [] if r.get("fitness_warning")), None)
    if warning:
        lines.append(f"warning: teacher: {warning}")
    return "\n".join(lines)
