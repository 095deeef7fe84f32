"""A send, and a schedule, remember why the preflight checks were skipped.

Revision ID: 0007
Revises: 0005
Create Date: 2026-12-01

``mailer send --skip-checks "reason"`` and ``mailer schedule --skip-checks "reason"`` send
an issue despite errors from ``mailer check``; the reason is kept with the send (and with
the schedule that will create it) and shown by ``mailer status``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("send", "schedule"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("checks_skipped", sa.String(length=500), nullable=True))


def downgrade() -> None:
    for table in ("send", "schedule"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("checks_skipped")
