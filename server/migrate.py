"""Schema management through Alembic: ``distillery db upgrade`` and the start-up check.

The API and the worker call :func:`require_current_schema` before they serve, so they refuse to
run against a database that is empty or behind, and say which command fixes it.
"""
from __future__ import annotations

import logging
from pathlib import Path

logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # chatty at INFO on import

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError


class SchemaNotReady(RuntimeError):
    """The database is not at the head revision."""


def migrations_dir() -> Path:
    """The ``migrations/`` folder, found as an installed package (editable or not)."""
    import migrations

    return Path(migrations.__file__).resolve().parent


def alembic_config(database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    # '%' must be escaped for ConfigParser interpolation (passwords in URLs).
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def upgrade(database_url: str, revision: str = "head") -> None:
    """Create or migrate the schema to ``revision``."""
    command.upgrade(alembic_config(database_url), revision)


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def current_revision(engine: Engine) -> str | None:
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except OperationalError as e:
        raise SchemaNotReady(
            f"cannot open the database {engine.url.render_as_string(hide_password=True)} ({e.orig}); "
            "check DISTILLERY_DATABASE_URL and run `distillery db upgrade`") from None


def require_current_schema(engine: Engine) -> None:
    """Raise :class:`SchemaNotReady` unless the database is at the head revision."""
    current, head = current_revision(engine), head_revision()
    if current != head:
        state = "has no distillery schema" if current is None else f"is at revision {current}, code needs {head}"
        raise SchemaNotReady(
            f"the database {engine.url.render_as_string(hide_password=True)} {state}; "
            "run `distillery db upgrade` (with the same DISTILLERY_DATABASE_URL) first"
        )
