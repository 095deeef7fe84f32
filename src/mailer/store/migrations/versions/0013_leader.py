"""Leases: the jobs only one worker may run at a time.

Revision ID: 0013
Revises: 0012
Create Date: 2027-01-12

- ``lease``: one row per job that only one of several ``mailer worker`` processes may run
  at a time (``scheduler``: deciding that a schedule is due and starting its send;
  ``bounces``: reading the bounce mailbox). Rows are made the first time a worker asks.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "lease",
        sa.Column("name", sa.String(40), nullable=False),
        sa.Column("holder", sa.String(200), nullable=True),
        sa.Column("term", sa.Integer(), nullable=False),
        sa.Column("acquired_at", sa.DateTime(), nullable=True),
        sa.Column("expires_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("name", name="pk_lease"),
    )


def downgrade() -> None:
    op.drop_table("lease")
