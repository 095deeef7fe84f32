"""Send status says only what a send is doing; a pause keeps its reason as an enum.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

A send that was created but not started was "scheduled", which a schedule row also is:
it is now "new". "failed" was never written. Paused sends get a ``pause_reason`` read
from the reason text they were paused with, so the worker keeps resuming the same ones.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_REASONS = (
    "operator",
    "interrupted",
    "worker-stopped",
    "unavailable",
    "failures",
    "error",
)


def upgrade() -> None:
    with op.batch_alter_table("send") as batch:
        batch.add_column(
            sa.Column(
                "pause_reason",
                sa.Enum(
                    *_REASONS,
                    name="pause_reason",
                    native_enum=False,
                    create_constraint=False,
                    length=20,
                ),
                nullable=True,
            )
        )
    op.execute("UPDATE send SET status = 'new' WHERE status = 'scheduled'")
    op.execute("UPDATE send SET status = 'paused' WHERE status = 'failed'")
    for reason, pattern in (
        ("worker-stopped", "the worker stopped%"),
        ("unavailable", "server unavailable%"),
        ("operator", "paused by mailer pause%"),
        ("interrupted", "interrupted%"),
        ("failures", "% failures in a row%"),
    ):
        op.execute(
            sa.text(
                "UPDATE send SET pause_reason = :reason "
                "WHERE status = 'paused' AND pause_reason IS NULL AND status_reason LIKE :pattern"
            ).bindparams(reason=reason, pattern=pattern)
        )
    op.execute(
        "UPDATE send SET pause_reason = 'error' WHERE status = 'paused' AND pause_reason IS NULL"
    )


def downgrade() -> None:
    op.execute("UPDATE send SET status = 'scheduled' WHERE status = 'new'")
    with op.batch_alter_table("send") as batch:
        batch.drop_column("pause_reason")
