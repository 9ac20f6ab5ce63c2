"""Sweeps: what a ``kind: sweep`` submission may say, the trial configs it leads to, and its summary.

A sweep is a job that runs no process of its own. It drives an Optuna study (``worker.sweep``)
whose trials are ordinary distill jobs, children of the sweep (``jobs.parent_id`` = the sweep,
``jobs.trial_number`` = the trial's number in the study). Everything here is plain data in and
out, shared by the API (validation, the trials table, promote) and the worker (trial configs, the
summary it stores on the sweep): nothing here imports Optuna.

The stored sweep config (``jobs.config`` of the sweep)::

    {"kind": "sweep", "base": <validated distill config>, "search_space": {name: spec},
     "trials": N, "parallel": P, "pruner": {...}, "seed": S, "teacher_outputs": true, "first_trials": [...],
     "study": "distillery-sweep-<hex>", "promoted": null | {"job_id", "trial_number", "by", "at"}}

Objective, fixed: maximize the trial's validation top-1 (the exported, final epoch's).
"""
from __future__ import annotations

import copy
import math
import secrets
from typing import Any, Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session

from deit_core import latency
from deit_core.config import ConfigError, parse_config, whole_number

from .export_reports import read_report
from .models import Job
from .serializers import at_chance
from .vocabulary import DISTILLATION_TYPES, FINAL_STATES, SUCCEEDED

# Search-space name -> (config section, key, value type). The user names these, and only these.
PARAMS: dict[str, tuple[str, str, type]] = {
    "student_model": ("student", "model", str),
    "distillation_type": ("distillation", "type", str),
    "alpha": ("distillation", "alpha", float),
    "tau": ("distillation", "tau", float),
    "lr": ("train", "lr", float),
    "epochs": ("train", "epochs", int),
}
CATEGORICAL_ONLY = ("student_model", "distillation_type")
# The sampler's seed is seed * SEED_STRIDE + trials asked so far (:func:`sampler_seed`); numpy, under
# Optuna's samplers, takes seeds 0..2**32 - 1, so the largest seed a sweep may name depends on its trials.
SEED_STRIDE = 100003
MAX_SAMPLER_SEED = 2**32 - 1
# The most values a stepped range may hold. A sweep asks at most a few hundred; Optuna's grid arithmetic
# (decimal, 28 digits) fails outright near 1e27 values (step 1e-300 did), and long before that a
# step below the float resolution of its range is no step at all.
MAX_STEP_VALUES = 10**6
PRUNERS = ("median", "threshold", "none")
SWEEP_BODY_KEYS = {"search_space", "trials", "parallel", "pruner", "seed", "teacher_outputs", "first_trials"}
PRUNER_KEYS = {"median": {"type", "n_startup_trials", "n_warmup_steps"},
               "threshold": {"type", "lower", "n_warmup_steps"}, "none": {"type"}}
MAX_CHOICES = 50


class SweepError(ValueError):
    """An invalid sweep submission; ``field`` is the dotted path in the request body."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------
def _number(value: Any, field: str, kind: type) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and whole_number(value) is None):
        raise SweepError(field, f"must be {'an integer' if kind is int else 'a number'}, got {value!r}")
    if not math.isfinite(value):
        raise SweepError(field, f"must be finite, got {value!r}")
    return kind(value)


def _int(body: Mapping[str, Any], key: str, default: int, lo: int, hi: int, field: str | None = None) -> int:
    value = body.get(key, default)
    value = _number(value, field or key, int)
    if not lo <= value <= hi:
        raise SweepError(field or key, f"must be between {lo} and {hi}, got {value}")
    return value


def normalize_param(name: str, spec: Any) -> dict[str, Any]:
    """``[a, b]`` or ``{"choices": [...]}`` -> categorical; ``{"low", "high", "log"?, "step"?}`` -> a range."""
    field = f"search_space.{name}"
    kind = PARAMS[name][2]
    if isinstance(spec, list):
        spec = {"choices": spec}
    if not isinstance(spec, Mapping):
        raise SweepError(field, "must be a list of choices or an object {choices} or {low, high, log, step}")
    if "choices" in spec:
        if set(spec) != {"choices"}:
            raise SweepError(field, "give either choices or low/high, not both")
        return {"choices": _choices(spec["choices"], f"{field}.choices", kind)}
    if name in CATEGORICAL_ONLY:
        raise SweepError(field, "takes choices only: a list, or {\"choices\": [...]}")
    return _range(spec, field, kind)


def _choices(choices: Any, field: str, kind: type) -> list[Any]:
    if not isinstance(choices, list) or not 1 <= len(choices) <= MAX_CHOICES:
        raise SweepError(field, f"must be a list of 1 to {MAX_CHOICES} values")
    out = [c if kind is str else _number(c, field, kind) for c in choices]
    if kind is str and not all(isinstance(c, str) for c in out):
        raise SweepError(field, "must be strings")
    if len(set(out)) != len(out):
        raise SweepError(field, "has duplicates")
    return out


def _range(spec: Mapping[str, Any], field: str, kind: type) -> dict[str, Any]:
    unknown = set(spec) - {"low", "high", "log", "step"}
    if unknown:
        raise SweepError(f"{field}.{sorted(unknown)[0]}", "unknown key; allowed: low, high, log, step (or choices)")
    if "low" not in spec or "high" not in spec:
        raise SweepError(field, "a range needs low and high")
    low, high = _number(spec["low"], f"{field}.low", kind), _number(spec["high"], f"{field}.high", kind)
    if not low < high:
        raise SweepError(f"{field}.high", f"must be greater than low ({low}), got {high}")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise SweepError(f"{field}.log", f"must be true or false, got {log!r}")
    if log and low <= 0:
        raise SweepError(f"{field}.low", f"must be > 0 for a log range, got {low}")
    out: dict[str, Any] = {"low": low, "high": high, "log": log}
    if spec.get("step") is not None:
        if log:
            raise SweepError(f"{field}.step", "cannot be combined with log")
        step = _number(spec["step"], f"{field}.step", kind)
        if step <= 0 or step > high - low:
            raise SweepError(f"{field}.step", f"must be > 0 and at most high - low, got {step}")
        if (high - low) / step >= MAX_STEP_VALUES:  # inf too, for a step that underflows the division
            raise SweepError(f"{field}.step", f"gives more than {MAX_STEP_VALUES} values from {low} to {high}; "
                             f"use a step of at least {(high - low) / (MAX_STEP_VALUES - 1):.3g}, or no step")
        out["step"] = step
    return out


def max_seed(trials: int) -> int:
    """The largest ``seed`` a sweep of ``trials`` trials may name: its last sampler seed
    (:func:`sampler_seed`) must still be one numpy takes."""
    return (MAX_SAMPLER_SEED - (trials - 1)) // SEED_STRIDE


def sampler_seed(cfg: Mapping[str, Any], asked: int) -> int:
    """The seed of the sampler built after ``asked`` trials (``worker.sweep.study``): a fresh one
    per call, so each call draws anew, and the same sweep seed gives the same sequence."""
    return cfg["seed"] * SEED_STRIDE + asked


def candidate_values(spec: Mapping[str, Any]) -> list[Any]:
    """The values that bound what a trial may get: every choice, or both ends of a range."""
    return list(spec["choices"]) if "choices" in spec else [spec["low"], spec["high"]]


def apply_params(base: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """The trial's config: the base distill config with the sampled values in place."""
    cfg = copy.deepcopy(dict(base))
    for name, value in params.items():
        section, key, _ = PARAMS[name]
        cfg.setdefault(section, {})[key] = value
    return cfg


def validate_search_space(raw: Any, base: Mapping[str, Any], check=None) -> dict[str, dict[str, Any]]:
    """Normalize the search space and check every bounding value against the engine's schema
    (``parse_config``) on the base config, and ``check(cfg)`` (the server's caps), naming
    ``search_space.<name>`` for a value the engine would refuse."""
    if not isinstance(raw, Mapping) or not raw:
        raise SweepError("search_space", f"must be a non-empty object over {', '.join(PARAMS)}")
    space: dict[str, dict[str, Any]] = {}
    for name, spec in raw.items():
        if name not in PARAMS:
            raise SweepError(f"search_space.{name}", f"unknown parameter; one of {', '.join(PARAMS)}")
        space[name] = normalize_param(name, spec)
        for value in candidate_values(space[name]):
            if name == "distillation_type" and value not in DISTILLATION_TYPES:
                raise SweepError(f"search_space.{name}", f"{value!r} is not one of {', '.join(DISTILLATION_TYPES)}")
            cfg = apply_params(base, {name: value})
            try:
                parse_config(cfg, check_paths=False)
                if check is not None:
                    check(cfg)
            except ConfigError as e:
                raise SweepError(f"search_space.{name}", f"{value!r}: {e.field} {e.message}") from None
            except ValueError as e:  # the server's caps (SubmissionError)
                raise SweepError(f"search_space.{name}", f"{value!r}: {getattr(e, 'message', e)}") from None
    return space


def validate_first_trials(raw: Any, space: Mapping[str, dict[str, Any]], trials: int) -> list[dict[str, Any]]:
    """Trials to run first, before the sampler's own (Optuna's ``enqueue_trial``): e.g. the recipe
    you use today, so the sweep is compared with it. Each names values inside the search space;
    parameters it leaves out are sampled."""
    if raw is None:
        return []
    if not isinstance(raw, list) or len(raw) > trials:
        raise SweepError("first_trials", f"must be a list of at most {trials} (trials) objects")
    out = []
    for i, params in enumerate(raw):
        field = f"first_trials.{i}"
        if not isinstance(params, Mapping):
            raise SweepError(field, "must be an object {parameter: value}")
        for name, value in params.items():
            if name not in space:
                raise SweepError(f"{field}.{name}", "is not in the search space")
            spec, kind = space[name], PARAMS[name][2]
            ok = value in spec["choices"] if "choices" in spec else (
                not isinstance(value, bool) and isinstance(value, (int, float)) and (kind is float or isinstance(value, int))
                and spec["low"] <= value <= spec["high"])
            if not ok:
                raise SweepError(f"{field}.{name}", f"{value!r} is outside the search space")
        out.append(dict(params))
    return out


def validate_pruner(raw: Any) -> dict[str, Any]:
    """``{"type": "median", "n_startup_trials": 1, "n_warmup_steps": 0}`` (default), ``{"type":
    "threshold", "lower": 50.0}`` (prune a trial whose val top-1 is below ``lower`` at an epoch after
    the warm-up), or ``{"type": "none"}``. ``n_warmup_steps`` N spares a trial's epochs 1..N; the
    last epoch is never pruned (worker.sweep.may_prune)."""
    raw = {"type": "median"} if raw is None else raw
    if not isinstance(raw, Mapping):
        raise SweepError("pruner", "must be an object {type: median | threshold | none, ...}")
    kind = raw.get("type")
    if kind not in PRUNERS:
        raise SweepError("pruner.type", f"must be one of {', '.join(PRUNERS)}, got {kind!r}")
    unknown = set(raw) - PRUNER_KEYS[kind]
    if unknown:
        raise SweepError(f"pruner.{sorted(unknown)[0]}", f"unknown key for a {kind} pruner; allowed: "
                         f"{', '.join(sorted(PRUNER_KEYS[kind]))}")
    out: dict[str, Any] = {"type": kind}
    if kind == "none":
        return out
    out["n_warmup_steps"] = _int(raw, "n_warmup_steps", 0, 0, 100000, "pruner.n_warmup_steps")
    if kind == "median":
        out["n_startup_trials"] = _int(raw, "n_startup_trials", 1, 0, 100000, "pruner.n_startup_trials")
    else:
        if "lower" not in raw:
            raise SweepError("pruner.lower", "is required for a threshold pruner (a val top-1, in %)")
        lower = _number(raw["lower"], "pruner.lower", float)
        if not 0 <= lower <= 100:
            raise SweepError("pruner.lower", f"must be a top-1 between 0 and 100, got {lower}")
        out["lower"] = lower
    return out


def validate_sweep(body: Mapping[str, Any], base: dict[str, Any], max_trials: int, check=None) -> dict[str, Any]:
    """The stored sweep config from a ``POST /jobs`` body whose ``config`` (the base distill
    config) is already validated and resolved."""
    if base["teacher"].get("checkpoint") is None:
        raise SweepError("config.teacher.checkpoint", "a sweep needs a trained teacher: a checkpoint artifact id or path")
    space = validate_search_space(body.get("search_space"), base, check)
    trials = _int(body, "trials", 8, 1, max_trials)
    parallel = _int(body, "parallel", 1, 1, trials)
    seed = _int(body, "seed", 0, 0, MAX_SAMPLER_SEED)
    if seed > max_seed(trials):
        raise SweepError("seed", f"must be between 0 and {max_seed(trials)} for {trials} trials (the samplers' seeds, "
                         f"seed * {SEED_STRIDE} + trial, must stay below 2**32), got {seed}")
    teacher_outputs = body.get("teacher_outputs", True)
    if not isinstance(teacher_outputs, bool):
        raise SweepError("teacher_outputs", f"must be true or false, got {teacher_outputs!r}")
    return {"kind": "sweep", "base": base, "search_space": space, "trials": trials, "parallel": parallel,
            "pruner": validate_pruner(body.get("pruner")), "seed": seed, "teacher_outputs": teacher_outputs,
            "first_trials": validate_first_trials(body.get("first_trials"), space, trials),
            "study": f"distillery-sweep-{secrets.token_hex(6)}", "promoted": None}


# ---------------------------------------------------------------------------------------------
# Fronts
# ---------------------------------------------------------------------------------------------
def pareto_front(points: list[Mapping[str, Any]], value: str, cost: str, spread: str | None = None) -> list[Any]:
    """Ids of the points no other point beats, ordered by cost (cheapest first). A point beats another
    when its value is >= and its cost is not worse, with one of them better; of equal points the first
    (lowest id) is kept. Points lacking either number are left out.

    ``spread``: the key of each point's measured latency block (p50, p10, p90). Costs are then
    compared by :mod:`deit_core.latency`: two whose p10-p90 spreads overlap are the same speed (so
    the more accurate one wins, and at equal accuracy the lower median), and a point is cheaper only
    when it is faster beyond the spread. Without it (sizes) costs compare exactly.
    """
    usable = [p for p in points if isinstance(p.get(value), (int, float)) and isinstance(p.get(cost), (int, float))]

    def timing(p: Mapping[str, Any]) -> Mapping[str, Any]:
        measured = p.get(spread) if spread else None
        return measured if isinstance(measured, Mapping) and latency.interval(measured) else {"p50": p[cost]}

    def beats(q: Mapping[str, Any], p: Mapping[str, Any]) -> bool:
        cheaper, dearer = latency.faster(timing(q), timing(p)), latency.faster(timing(p), timing(q))
        if q[value] < p[value] or dearer:
            return False
        # equal accuracy at the same speed: the lower median, then the lower id, so "beats" stays a strict
        # order (by accuracy, then median, then id) and the front is never empty
        return q[value] > p[value] or cheaper or (q[cost], q["id"]) < (p[cost], p["id"])

    front = [p for p in usable if not any(beats(q, p) for q in usable if q is not p)]
    return [p["id"] for p in sorted(front, key=lambda p: (p[cost], -p[value], p["id"]))]


# ---------------------------------------------------------------------------------------------
# The summary (what GET /jobs/<sweep> shows and the dashboard draws)
# ---------------------------------------------------------------------------------------------
def trial_row(job: Job) -> dict[str, Any]:
    """One row of the trials table: params, state, val top-1, and the ``.ptl``'s top-1, p50
    latency and size (from the export report)."""
    cfg = job.config or {}
    params = {name: (cfg.get(section) or {}).get(key) for name, (section, key, _) in PARAMS.items()}
    top1 = (job.metrics or {}).get("val_top1")
    row: dict[str, Any] = {"id": job.id, "job_id": job.id, "number": job.trial_number, "name": job.name,
                           "state": job.state, "params": params, "error": job.error,
                           "top1": float(top1) if isinstance(top1, (int, float)) else None,
                           "epoch": (job.progress or {}).get("epoch"),
                           "ptl_top1": None, "latency_ms": None, "latency": None, "cpu": None, "size_bytes": None,
                           "ptl_artifact": None, "at_chance": at_chance(job)}
    if job.state == SUCCEEDED:
        report = read_report(job)
        ptl = ((report or {}).get("variants") or {}).get("ptl") or {}
        row["ptl_top1"] = ptl.get("top1")
        row["latency_ms"] = (ptl.get("latency_ms") or {}).get("p50")
        row["latency"] = ptl.get("latency_ms")  # p50, p10, p90, runs, threads: the front ignores in-spread differences
        row["cpu"] = (report or {}).get("cpu")
        row["size_bytes"] = ptl.get("size_bytes")
        art = next((a for a in job.artifacts if a.format == "ptl"), None)
        if art is not None:
            row["ptl_artifact"] = {"id": art.id, "sha256": art.sha256, "size": art.size}
            row["size_bytes"] = row["size_bytes"] or art.size
    return row


def trial_jobs(db: Session, sweep_id: int) -> list[Job]:
    return list(db.scalars(select(Job).where(Job.parent_id == sweep_id, Job.trial_number.is_not(None))
                           .order_by(Job.trial_number)))


def summarize(db: Session, sweep: Job) -> dict[str, Any]:
    """Trials, counts, the best trial and the accuracy-latency / accuracy-size fronts (of finished
    trials with an exported ``.ptl``; accuracy is the ``.ptl``'s own top-1)."""
    cfg = sweep.config or {}
    rows = [trial_row(j) for j in trial_jobs(db, sweep.id)]
    prep = db.scalar(select(Job).where(Job.parent_id == sweep.id, Job.trial_number.is_(None)).order_by(Job.id).limit(1))
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    done = [r for r in rows if r["state"] == SUCCEEDED and r["top1"] is not None]
    best = max(done, key=lambda r: (r["top1"], -r["id"]), default=None)
    exported = [{**r, "acc": r["ptl_top1"] if r["ptl_top1"] is not None else r["top1"]} for r in done]
    return {
        "trials_requested": cfg.get("trials"), "parallel": cfg.get("parallel"), "study": cfg.get("study"),
        "objective": "maximize val_top1", "search_space": cfg.get("search_space"), "pruner": cfg.get("pruner"),
        "teacher_outputs_job": None if prep is None else {"id": prep.id, "state": prep.state, "error": prep.error},
        "trials": rows, "counts": counts, "finished": sum(1 for r in rows if r["state"] in FINAL_STATES),
        "best": None if best is None else {"job_id": best["id"], "number": best["number"], "top1": best["top1"],
                                           "params": best["params"]},
        "fronts": {"latency": pareto_front(exported, "acc", "latency_ms", spread="latency"),
                   "size": pareto_front(exported, "acc", "size_bytes")},
        "promoted": cfg.get("promoted"),
    }
