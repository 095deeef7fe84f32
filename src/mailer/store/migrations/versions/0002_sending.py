"""Sending: approvals, sends, the lists of a send and the per-recipient ledger.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22

Written by hand to match mailer.models section 3. Column types are spelled out here rather
than imported from the models, so this revision stays the same when the models move on.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _enum(name: str, *values: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=False, length=20)


def upgrade() -> None:
    op.create_table(
        "approval",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("slug", sa.String(64), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("approved_by", sa.String(200), nullable=False),
        sa.Column("approved_at", sa.DateTime(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_approval"),
    )
    op.create_index("ix_approval_slug", "approval", ["slug"])
    op.create_table(
        "send",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("slug", sa.String(64), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(500), nullable=False),
        sa.Column("html", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column(
            "status",
            _enum("send_status", "scheduled", "sending", "paused", "sent", "cancelled", "failed"),
            nullable=False,
        ),
        sa.Column("status_reason", sa.String(1000), nullable=False),
        sa.Column("approved_by", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("scheduled_at", sa.DateTime(), nullable=True),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("claimed_by", sa.String(200), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(), nullable=True),
        sa.Column("total", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_send"),
    )
    op.create_index("ix_send_slug", "send", ["slug"])
    op.create_index("ix_send_status", "send", ["status"])
    op.create_table(
        "send_list",
        sa.Column("send_id", sa.Integer(), nullable=False),
        sa.Column("list_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("send_id", "list_id", name="pk_send_list"),
        sa.ForeignKeyConstraint(
            ["send_id"], ["send.id"], name="fk_send_list_send_id_send", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["list_id"],
            ["mailing_list.id"],
            name="fk_send_list_list_id_mailing_list",
            ondelete="RESTRICT",
        ),
    )
    op.create_table(
        "delivery",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("send_id", sa.Integer(), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column(
            "status",
            _enum(
                "delivery_status",
                "pending",
                "in-flight",
                "sent",
                "failed-temporary",
                "failed-permanent",
            ),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(1000), nullable=False),
        sa.Column("message_id", sa.String(200), nullable=False),
        sa.Column("sent_at", sa.DateTime(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_delivery"),
        sa.UniqueConstraint("send_id", "subscriber_id", name="uq_delivery_send_id_subscriber_id"),
        sa.ForeignKeyConstraint(
            ["send_id"], ["send.id"], name="fk_delivery_send_id_send", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscriber.id"],
            name="fk_delivery_subscriber_id_subscriber",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_delivery_send_id_status", "delivery", ["send_id", "status"])
    op.create_index("ix_delivery_sent_at", "delivery", ["sent_at"])


def downgrade() -> None:
    op.drop_table("delivery")
    op.drop_table("send_list")
    op.drop_table("send")
    op.drop_table("approval")
