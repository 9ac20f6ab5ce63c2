"""What the service knows of a config's training data, for :mod:`deit_core.config_warnings`.

The rules are the engine's (pure); this module supplies their facts: the training folder's image
count and a name, from the registered dataset it belongs to (its row has both), else by counting the
folder's images (up to :data:`COUNT_CAP`, so a huge shared folder costs nothing: past the cap it is
simply "large"). Only a folder the caller may use (:func:`server.submissions.resolve_data_path`) is
looked at, so the answer never tells anything of other folders. Used by ``POST /jobs`` (the 201's
``warnings``) and ``POST /warnings`` (the form).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session

from deit_core.config import MAX_PATH_CHARS
from deit_core.config_warnings import DataFacts, config_warnings

from .job_spec import JobSpec
from .models import Dataset, User
from .settings import Settings
from .storage import IMAGE_EXTENSIONS
from .submissions import SubmissionError, resolve_data_path
from .vocabulary import TEACHER

COUNT_CAP = 20_000  # images counted at most; beyond it the set is not small and its size unknown


def count_images(root: Path, cap: int = COUNT_CAP) -> int | None:
    """Images in ``root``'s class folders; None past ``cap`` or when the folder cannot be read."""
    n = 0
    try:
        for cls in os.scandir(root):
            if not cls.is_dir() or cls.name.startswith("."):
                continue
            for f in os.scandir(cls.path):
                if os.path.splitext(f.name)[1].lower() in IMAGE_EXTENSIONS:
                    n += 1
                    if n > cap:
                        return None
    except OSError:
        return None
    return n


def _dataset_rows(db: Session, user: User) -> list[Dataset]:
    q = select(Dataset)
    if not user.is_admin:
        q = q.where(Dataset.owner_id == user.id)
    return list(db.scalars(q))


def data_facts(db: Session, settings: Settings, user: User, train: str) -> DataFacts:
    """Facts of a training folder given as ``dataset:NAME/train`` or a server path: a registered
    dataset's row, else a count; nothing for a folder the caller may not use."""
    rows = _dataset_rows(db, user)
    if train.startswith("dataset:"):
        name = train[len("dataset:"):].partition("/")[0]
        ds = next((d for d in rows if d.name == name), None)
        return DataFacts(ds.num_train, ds.name) if ds else DataFacts()
    if len(train) > MAX_PATH_CHARS:  # (a form's raw value: POST /jobs refused it before)
        return DataFacts()
    try:
        p = Path(resolve_data_path(db, settings, user, train, "data.train"))
    except (SubmissionError, OSError, ValueError):
        return DataFacts()
    for ds in rows:
        if Path(ds.path).resolve() / "train" == p:
            return DataFacts(ds.num_train, ds.name)
    return DataFacts(count_images(p), p.parent.name if p.name in ("train", "training") else p.name)


def for_config(db: Session, settings: Settings, user: User, cfg: Mapping[str, Any]) -> list[dict[str, str]]:
    """Warnings of one raw or parsed config (its ``data.train`` looked up as :func:`data_facts` does)."""
    data = cfg.get("data")
    train = data.get("train") if isinstance(data, Mapping) else None
    facts = data_facts(db, settings, user, train) if isinstance(train, str) and train.strip() else DataFacts()
    return config_warnings(cfg, facts)


def for_specs(db: Session, settings: Settings, user: User, specs: list[JobSpec], main: int) -> list[dict[str, str]]:
    """The 201's ``warnings``: the job asked for (``specs[main]``), fields as in its config
    (``train.mixup``), then a pipeline's teacher job's (``teacher_job.config.train.mixup``) where they
    say something else."""
    out = for_config(db, settings, user, specs[main].config)
    seen = {w["message"] for w in out}
    for spec in specs:
        if spec.kind == TEACHER and spec is not specs[main]:
            out += [{**w, "field": f"teacher_job.config.{w['field']}"} for w in for_config(db, settings, user, spec.config)
                    if w["message"] not in seen]
    return out
