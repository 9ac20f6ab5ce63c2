"""Per-image predictions files: what lets two models be compared image by image (no torch).

A top-1 alone cannot say whether one model beats another: that needs both models' predictions on
the same images (deit_core/paired_stats.py). Training writes its final evaluation's predictions to
``final/val_predictions.json``; the exporter writes one ``predictions.<variant>.json`` per model it
measured (``fp32``, ``int8``, ``ptl``, ``pte``) beside its ``report.json``. Both have one format::

    {"format": 1, "model": "final" | "fp32" | "int8" | "ptl" | "pte",
     "val_fingerprint": sha256 hex, "classes": [class names, in the model's output order],
     "images": [paths relative to the val root, "/"-separated, sorted],
     "labels": [class index per image], "predictions": [top-1 class index per image],
     "top1": percent of images whose prediction is their label}

Paths are relative to the val folder (the ImageFolder root holding the class folders), so files
written by different jobs on the same val set line up image by image; ``val_fingerprint`` (the
sha256 of every ``path<TAB>class name`` line, sorted) tells whether two files were made on the
same images with the same labels, whatever the folder was called or the classes' index order.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .files import write_json_atomic
from .paired_stats import PairedComparison, compare

FORMAT = 1
VAL_PREDICTIONS = "val_predictions.json"  # in a training run's final/
EXPORT_PREDICTIONS = "predictions.{variant}.json"  # beside an export's report.json, one per variant


class PredictionsError(ValueError):
    """A predictions file is unreadable, malformed, or not comparable with another; the message says which."""


def export_predictions_name(variant: str) -> str:
    """``predictions.ptl.json`` for the ``ptl`` variant, and so on."""
    return EXPORT_PREDICTIONS.format(variant=variant)


def relative_images(samples: Sequence[tuple[str, int]], root: str | os.PathLike) -> list[str]:
    """ImageFolder ``samples`` paths relative to ``root``, "/"-separated."""
    return [Path(os.path.relpath(path, root)).as_posix() for path, _ in samples]


def val_fingerprint(images: Sequence[str], labels: Sequence[int], classes: Sequence[str]) -> str:
    """sha256 of the sorted ``relative path<TAB>class name`` lines: equal for the same images with the same labels."""
    lines = sorted(f"{path}\t{classes[int(label)]}\n" for path, label in zip(images, labels))
    return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()


def predictions_document(model: str, images: Sequence[str], labels: Sequence[int], predictions: Sequence[int],
                         classes: Sequence[str]) -> dict[str, Any]:
    """The file's content, rows sorted by path (so two files compare row by row)."""
    if not (len(images) == len(labels) == len(predictions)):
        raise PredictionsError(f"{len(images)} images, {len(labels)} labels and {len(predictions)} predictions: "
                               "one of each per image")
    rows = sorted(zip(images, (int(x) for x in labels), (int(x) for x in predictions)))
    n = len(rows)
    right = sum(1 for _, y, p in rows if y == p)
    return {"format": FORMAT, "model": model, "val_fingerprint": val_fingerprint(images, labels, classes),
            "classes": list(classes), "images": [r[0] for r in rows], "labels": [r[1] for r in rows],
            "predictions": [r[2] for r in rows], "top1": round(100.0 * right / n, 3) if n else 0.0}


def write_predictions(path: Path, document: dict[str, Any]) -> Path:
    """Write a document from :func:`predictions_document` atomically."""
    write_json_atomic(path, document)
    return path


@dataclass(frozen=True)
class Predictions:
    """One predictions file, read back and checked."""

    path: Path
    model: str
    fingerprint: str
    classes: tuple[str, ...]
    images: tuple[str, ...]
    labels: tuple[int, ...]
    predictions: tuple[int, ...]
    top1: float


def read_predictions(path: str | os.PathLike) -> Predictions:
    """Read a predictions file; refuse another format, ragged lists, or a fingerprint that does not match its rows."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise PredictionsError(f"{p}: not a readable predictions file ({e})") from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise PredictionsError(f"{p}: format {doc.get('format') if isinstance(doc, dict) else None!r}, expected {FORMAT}")
    try:
        images, labels, preds, classes = doc["images"], doc["labels"], doc["predictions"], doc["classes"]
        if not (len(images) == len(labels) == len(preds)):
            raise PredictionsError(f"{p}: {len(images)} images, {len(labels)} labels, {len(preds)} predictions")
        fingerprint = val_fingerprint(images, labels, classes)
    except (KeyError, TypeError, IndexError) as e:
        raise PredictionsError(f"{p}: malformed predictions file ({type(e).__name__}: {e})") from e
    if fingerprint != doc.get("val_fingerprint"):
        raise PredictionsError(f"{p}: val_fingerprint does not match its images and labels; the file was altered")
    return Predictions(p, str(doc.get("model")), fingerprint, tuple(classes), tuple(images), tuple(int(x) for x in labels),
                       tuple(int(x) for x in preds), float(doc["top1"]))


def paired(a: Predictions, b: Predictions) -> PairedComparison:
    """Compare model ``a`` with model ``b`` (gain = a - b) on the images both files hold; refuses two val sets."""
    if a.fingerprint != b.fingerprint:
        raise PredictionsError(f"{a.path} and {b.path} were made on different val images or labels "
                               f"(fingerprints {a.fingerprint[:12]} vs {b.fingerprint[:12]}); compare on one val set")
    if a.classes != b.classes:  # same images and class names, another index order: map b's indices to a's
        index = {c: i for i, c in enumerate(a.classes)}
        b_preds = [index.get(b.classes[p], -1) for p in b.predictions]
    else:
        b_preds = list(b.predictions)
    return compare(a.predictions, b_preds, a.labels)
