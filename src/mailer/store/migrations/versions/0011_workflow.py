"""Rehearsals, per-issue settings and failing slots.

Revision ID: 0011
Revises: 0009
Create Date: 2026-12-08

- ``send.transport``: the transport a send was created for. A send through the outbox is
  a rehearsal: nobody was emailed, so it never counts as delivered for a later real send.
  Sends made before this revision have none and count as they always did.
- ``send.overrides``: the issue's own settings (organisation, sender's name, footer,
  brand), frozen with the send as JSON.
- ``schedule.failing_since``: when the current slot of a schedule first failed for a
  reason a person can fix; the worker tries it again until the grace period ends.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("send") as batch:
        batch.add_column(sa.Column("transport", sa.String(length=20), nullable=True))
        batch.add_column(sa.Column("overrides", sa.String(length=4000), nullable=True))
    with op.batch_alter_table("schedule") as batch:
        batch.add_column(sa.Column("failing_since", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("schedule") as batch:
        batch.drop_column("failing_since")
    with op.batch_alter_table("send") as batch:
        batch.drop_column("overrides")
        batch.drop_column("transport")
