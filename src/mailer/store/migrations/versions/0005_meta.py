"""The meta table: the signing key's fingerprint and the wrapped suppression key.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

Written by hand to match mailer.store.models section 5. The rows are written by
mailer.store.keys the first time a database is opened with a key.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "meta",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.String(2000), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_meta"),
    )


def downgrade() -> None:
    op.drop_table("meta")
