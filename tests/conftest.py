"""Shared fixtures: a small real digits ImageFolder and tiny-but-real job configs; and, at the end of a
run, one line counting the tests that ran under each marker (so `make test` shows what the fast
selection, `make test-fast`, leaves out)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import TINY_RECIPE, job_config

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def small_imagefolder(src: Path, dst: Path, per_class: dict[str, int]) -> Path:
    """Copy the first N images of each class of a digits split into a smaller ImageFolder."""
    for split, n in per_class.items():
        for cls_dir in sorted((src / split).iterdir()):
            out = dst / split / cls_dir.name
            out.mkdir(parents=True, exist_ok=True)
            for f in sorted(cls_dir.iterdir())[:n]:
                shutil.copy(f, out / f.name)
    return dst


@pytest.fixture(scope="session")
def digits(tmp_path_factory) -> Path:
    """The full digits ImageFolder at 32 px, written by the real `demo-data` code."""
    from deit_core.data import write_digits_imagefolder

    root = tmp_path_factory.mktemp("digits") / "digits"
    write_digits_imagefolder(root, img_size=32)
    return root


@pytest.fixture(scope="session")
def small_digits(digits, tmp_path_factory) -> Path:
    """20 train and 8 val images per class: enough for a real run that takes seconds."""
    return small_imagefolder(digits, tmp_path_factory.mktemp("small") / "digits", {"train": 20, "val": 8})


@pytest.fixture(scope="session")
def odd_val_digits(small_digits, tmp_path_factory) -> Path:
    """small_digits with one val image removed: 79 val images, which two processes cannot split evenly."""
    root = tmp_path_factory.mktemp("odd") / "digits"
    shutil.copytree(small_digits, root)
    sorted((root / "val" / "0").iterdir())[0].unlink()
    return root


QUICK_TRAIN = {**TINY_RECIPE, "batch_size": 16, "lr": 1.0e-3, "smoothing": 0.1, "scale_min": 0.5, "hflip": 0, "log_every": 2}


def teacher_config(data: Path, epochs: int = 1, **train) -> dict:
    return job_config("teacher", str(data), {**QUICK_TRAIN, "epochs": epochs, **train})


def distill_config(data: Path, teacher_ckpt: str | None, dtype: str = "hard", epochs: int = 1, **train) -> dict:
    cfg = job_config("distill", str(data), {**QUICK_TRAIN, "epochs": epochs, **train}, distillation=dtype)
    cfg["teacher"]["checkpoint"] = teacher_ckpt  # None too: the engine's own error is tested
    return cfg


def run_cli(*args: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    e = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), **(env or {})}
    return subprocess.run([PY, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=e)


@pytest.fixture(scope="session")
def trained_teacher(small_digits, tmp_path_factory) -> Path:
    """A real regnety_002 teacher run on the small digits (one epoch), for distillation tests."""
    import json

    d = tmp_path_factory.mktemp("teacher")
    cfg = d / "teacher.json"
    cfg.write_text(json.dumps(teacher_config(small_digits, ema=True, ema_decay=0.9)))
    r = run_cli("-m", "deit_core.train", "--config", str(cfg), "--output", str(d / "run"))
    assert r.returncode == 0, r.stderr[-3000:]
    return d / "run"


# ----------------------------------------------------------------------------- marker summary

MARKERS = ("slow", "integration", "browser")  # registered in pyproject.toml; `make test-fast` deselects them
_MARKS = pytest.StashKey[dict]()


def pytest_collection_modifyitems(config, items):
    config.stash[_MARKS] = {item.nodeid: {m.name for m in item.iter_markers()} & set(MARKERS) for item in items}


def marker_counts(outcomes: dict[str, str], marks: dict[str, set[str]]) -> dict[str, dict[str, int]]:
    """``{marker or "unmarked": {outcome: tests}}``; a test with two markers counts under both."""
    counts: dict[str, dict[str, int]] = {}
    for nodeid, outcome in outcomes.items():
        for name in sorted(marks.get(nodeid) or {"unmarked"}):
            counts.setdefault(name, {}).setdefault(outcome, 0)
            counts[name][outcome] += 1
    return counts


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    outcomes: dict[str, str] = {}  # nodeid -> its worst outcome over setup, call and teardown
    for outcome in ("passed", "xpassed", "xfailed", "skipped", "failed", "error"):  # later ones win
        for report in terminalreporter.stats.get(outcome, []):
            if getattr(report, "nodeid", None):
                outcomes[report.nodeid] = outcome
    counts = marker_counts(outcomes, config.stash.get(_MARKS, {}))
    if counts:
        terminalreporter.write_line("tests by marker: " + "; ".join(
            f"{name} {sum(c.values())} ({', '.join(f'{n} {o}' for o, n in sorted(c.items()))})"
            for name, c in sorted(counts.items(), key=lambda kv: (kv[0] == "unmarked", kv[0]))))


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory) -> Path:
    """A SQLite database at the newest migration, made once (Alembic takes most of a second); tests copy it."""
    from server.migrate import upgrade

    path = tmp_path_factory.mktemp("migrated") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def sqlite_db(tmp_path, migrated_sqlite):
    """A fresh copy of the migrated database, holding the user alice (no service, no broker)."""
    from server.db import Database
    from server.models import User

    shutil.copy(migrated_sqlite, tmp_path / "unit.db")
    database = Database(f"sqlite:///{tmp_path}/unit.db")
    with database.session() as s:
        s.add(User(name="alice"))
    yield database
    database.dispose()


@pytest.fixture
def make_app(migrated_sqlite):
    """A factory: ``make_app(folder, **settings)`` is the real Flask app on a fresh copy of the migrated
    database in ``folder`` (storage, broker and state beside it, ``folder`` the data root unless
    ``settings`` say otherwise), its folders made as ``distillery serve`` makes them."""
    def make(folder: Path, **settings):
        from server.app import create_app
        from server.settings import Settings

        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(migrated_sqlite, folder / "app.db")
        st = Settings(**{"database_url": f"sqlite:///{folder}/app.db", "storage": str(folder / "storage"),
                         "broker_dir": str(folder / "broker"), "state_dir": str(folder / "state"),
                         "data_roots": (str(folder),), "secret_key": "test", **settings})
        st.ensure_dirs()
        return create_app(st)

    return make


@pytest.fixture
def sqlite_session(sqlite_db):
    """A session on :func:`sqlite_db`, closed after the test."""
    s = sqlite_db.factory()
    yield s
    s.close()

