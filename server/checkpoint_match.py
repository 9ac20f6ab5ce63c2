"""A checkpoint artifact named in a submission must fit the job that loads it.

A teacher picked from a finished job used to keep the form's ``teacher.model: regnety_160`` and
``img_size: 224`` while the checkpoint was a ``regnety_002`` trained at 32 px; the API accepted it and
the run died 15 s later with a state_dict dump. The artifact carries its own config
(``metadata.config_json``, written by the engine next to the weights), so at submission:

* what the caller left out (``teacher.model`` / ``student.model``, ``data.img_size``, ``data.train`` /
  ``data.val``) is filled from it;
* what contradicts it (another architecture, another image size) is refused, naming the field;
* the data's classes must be the checkpoint's classes (checked once the data paths are resolved).

Checkpoints named by server path carry no such record and are left to the engine.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from .models import Artifact, User
from .vocabulary import MAX_ID

# (section, reference key, model key): which field names the checkpoint and which its architecture.
REFERENCES = (("teacher", "checkpoint", "model"), ("student", "init", "model"))


class CheckpointMismatch(ValueError):
    """A submitted field contradicts the checkpoint artifact it loads; ``field`` is dotted within the config."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


def artifact_ref(value: Any) -> int | None:
    """An artifact id (an int, or the digits the form sends), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def checkpoint_record(db: Session, user: User, ref: int) -> tuple[Artifact, dict[str, Any]] | None:
    """The artifact and the config it was trained with, if the caller may use it (else None: the
    reference check that follows answers "no checkpoint artifact with id N")."""
    art = db.get(Artifact, ref) if 0 < ref <= MAX_ID else None
    if art is None or art.format != "checkpoint" or not (user.is_admin or art.job.owner_id == user.id):
        return None
    record = dict((art.meta or {}).get("config_json") or {})
    record.setdefault("architecture", (art.meta or {}).get("architecture"))
    if not record.get("config"):
        record["config"] = art.job.config or {}
    return art, record


def fill_from_checkpoints(db: Session, user: User, raw: dict[str, Any], kind: str | None) -> dict[str, Any]:
    """Fill ``raw`` (a submitted config, not yet parsed) from the checkpoint artifacts it names."""
    for section, ref_key, model_key in REFERENCES:
        if section == "student" and kind != "distill":
            continue
        part = raw.get(section)
        if not isinstance(part, dict):
            continue
        ref = artifact_ref(part.get(ref_key))
        found = checkpoint_record(db, user, ref) if ref is not None else None
        if found is None:
            continue
        art, record = found
        part[ref_key] = ref
        what = f"checkpoint artifact {ref} (job {art.job_id})"
        arch = record.get("architecture")
        if arch:
            if part.get(model_key) in (None, ""):
                part[model_key] = arch
            elif part[model_key] != arch:
                raise CheckpointMismatch(f"{section}.{model_key}", f"{what} is a {arch}, not a {part[model_key]}: "
                                         f"set {section}.{model_key} to {arch!r} or leave it out")
        _fill_data(raw, record, what, f"{section}.{ref_key}")
    return raw


def _fill_data(raw: dict[str, Any], record: dict[str, Any], what: str, ref_field: str) -> None:
    data = raw.get("data")
    if data is None:
        data = raw["data"] = {}
    if not isinstance(data, dict):
        return
    size = record.get("img_size") or (record.get("config", {}).get("data") or {}).get("img_size")
    if isinstance(size, int):
        if data.get("img_size") in (None, ""):
            data["img_size"] = size
        elif data["img_size"] != size:
            raise CheckpointMismatch("data.img_size", f"{what} was trained at {size} px, not {data['img_size']}: "
                                     f"set data.img_size to {size} or leave it out (named by {ref_field})")
    source = record.get("config", {}).get("data") or {}
    for key in ("train", "val"):
        if data.get(key) in (None, "") and source.get(key):
            data[key] = source[key]


def check_classes(db: Session, cfg: dict[str, Any]) -> None:
    """After the data paths are resolved: the checkpoint's classes are the training data's classes."""
    train = Path(cfg["data"]["train"])
    try:
        classes = sorted(p.name for p in train.iterdir() if p.is_dir())
    except OSError:
        return
    for section, ref_key, _ in REFERENCES:
        ref = (cfg.get(section) or {}).get(ref_key)
        if not isinstance(ref, int) or isinstance(ref, bool):
            continue
        art = db.get(Artifact, ref)
        theirs = ((art.meta or {}).get("config_json") or {}).get("classes") if art is not None else None
        if theirs and list(theirs) != classes:
            raise CheckpointMismatch("data.train", f"has {len(classes)} classes but checkpoint artifact {ref} "
                                     f"({section}.{ref_key}) was trained on {len(theirs)} "
                                     f"({', '.join(map(str, theirs[:5]))}{', ...' if len(theirs) > 5 else ''})")
