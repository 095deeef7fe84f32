"""Approval by the approvers themselves, and an issue's history.

Revision ID: 0019
Revises: 0014
Create Date: 2027-01-20

- ``approval.method``: ``command`` (a name typed with ``mailer approve --by``) or ``link``
  (an approver's button behind the link mailed to them); none before this revision.
- ``approval.content_text``: the approved content as readers get it in text, so the next
  approver is shown what changed since.
- ``approval_request``: one row per approver asked by ``mailer approve --request``; its
  link decides it once.
- ``issue_save``: each save in ``mailer edit``, for ``mailer history``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("approval") as batch:
        batch.add_column(sa.Column("method", sa.String(length=20), nullable=True))
        batch.add_column(sa.Column("content_text", sa.Text(), nullable=True))
    op.create_table(
        "approval_request",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("slug", sa.String(64), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("approver", sa.String(320), nullable=False),
        sa.Column("requested_at", sa.DateTime(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("decided_at", sa.DateTime(), nullable=True),
        sa.Column("reason", sa.String(2000), nullable=True),
        sa.Column("content_text", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_approval_request"),
    )
    op.create_index("ix_approval_request_slug", "approval_request", ["slug"])
    op.create_table(
        "issue_save",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("slug", sa.String(64), nullable=False),
        sa.Column("saved_at", sa.DateTime(), nullable=False),
        sa.Column("saved_by", sa.String(200), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_issue_save"),
    )
    op.create_index("ix_issue_save_slug", "issue_save", ["slug"])


def downgrade() -> None:
    op.drop_index("ix_issue_save_slug", "issue_save")
    op.drop_table("issue_save")
    op.drop_index("ix_approval_request_slug", "approval_request")
    op.drop_table("approval_request")
    with op.batch_alter_table("approval") as batch:
        batch.drop_column("content_text")
        batch.drop_column("method")
