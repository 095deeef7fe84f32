"""Alembic environment for mailer's schema, driven from code by :mod:`mailer.store.migrate`.

mailer ships no alembic.ini: :func:`mailer.store.migrate.upgrade` builds the configuration, opens a
connection (one transaction, foreign keys off) and passes it in ``config.attributes``.
"""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import mailer.store.models  # noqa: F401  (registers the tables on SQLModel.metadata)

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through mailer: `mailer db upgrade`")

context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    # SQLite cannot alter most things in place; batch mode rebuilds the table instead.
    render_as_batch=True,
    # mailer.db issues BEGIN itself, so SQLite's DDL is transactional: all or nothing.
    transactional_ddl=True,
)
with context.begin_transaction():
    context.run_migrations()
