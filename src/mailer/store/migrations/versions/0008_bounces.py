"""Bounces, complaints and unsubscribe emails: one row per thing learnt from them.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01

Written by hand to match mailer.models section 5.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_KINDS = (
    "hard",
    "soft",
    "policy",
    "complaint",
    "unsubscribe",
    "delayed",
    "delivered",
    "auto-reply",
    "unrecognised",
)


def upgrade() -> None:
    op.create_table(
        "bounce_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                *_KINDS, name="bounce_kind", native_enum=False, create_constraint=False, length=20
            ),
            nullable=False,
        ),
        sa.Column("send_id", sa.Integer(), nullable=True),
        sa.Column("subscriber_id", sa.Integer(), nullable=True),
        sa.Column("delivery_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("reason", sa.String(1000), nullable=False),
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("action", sa.String(200), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_bounce_event"),
        sa.UniqueConstraint("key", name="uq_bounce_event_key"),
        sa.ForeignKeyConstraint(
            ["send_id"], ["send.id"], name="fk_bounce_event_send_id_send", ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscriber.id"],
            name="fk_bounce_event_subscriber_id_subscriber",
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["delivery.id"],
            name="fk_bounce_event_delivery_id_delivery",
            ondelete="SET NULL",
        ),
    )
    op.create_index("ix_bounce_event_send_id_kind", "bounce_event", ["send_id", "kind"])
    op.create_index(
        "ix_bounce_event_subscriber_id_send_id", "bounce_event", ["subscriber_id", "send_id"]
    )
    op.create_index("ix_bounce_event_received_at", "bounce_event", ["received_at"])


def downgrade() -> None:
    op.drop_table("bounce_event")
