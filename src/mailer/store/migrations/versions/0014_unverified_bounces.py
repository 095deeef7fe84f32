"""Returned mail that no signature ties to a copy is kept apart: unverified.

Revision ID: 0014
Revises: 0013
Create Date: 2027-01-20

- ``bounce_event.verified``: whether the report was tied to the copy it is about by a
  MAC mailer made (the VERP address, the quoted Message-ID or unsubscribe token). Rows
  recorded before were tied the old way; they stay as they are, marked verified.
- ``bounce_event.address``: the address an unverified report names, shown to the operator
  and used by ``mailer bounces apply``; blanked when that person is erased.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("bounce_event") as batch:
        batch.add_column(
            sa.Column("verified", sa.Boolean(), nullable=False, server_default=sa.true())
        )
        batch.add_column(sa.Column("address", sa.String(320), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("bounce_event") as batch:
        batch.drop_column("address")
        batch.drop_column("verified")
