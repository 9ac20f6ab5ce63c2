"""Alembic environment and versions (located by ``server.migrate.migrations_dir``)."""
