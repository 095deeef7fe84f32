"""Subscribers: mailing lists, subscribers, memberships, consent and suppression.

Revision ID: 0001
Revises:
Create Date: 2026-11-22

Written by hand to match mailer.models section 2. Column types are spelled out here rather
than imported from the models, so this revision stays the same when the models move on.
Timestamps are naive UTC (see models.UTCDateTime); enums are VARCHAR(20) holding values.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _enum(name: str, *values: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=False, length=20)


def upgrade() -> None:
    op.create_table(
        "mailing_list",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("slug", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.String(2000), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_mailing_list"),
        sa.UniqueConstraint("slug", name="uq_mailing_list_slug"),
    )
    op.create_table(
        "subscriber",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("organisation", sa.String(200), nullable=False),
        sa.Column(
            "status",
            _enum("subscriber_status", "active", "unsubscribed", "bounced", "complained", "erased"),
            nullable=False,
        ),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.Column("updated", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_subscriber"),
        sa.UniqueConstraint("email", name="uq_subscriber_email"),
    )
    op.create_table(
        "suppression",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email_hash", sa.String(64), nullable=False),
        sa.Column("reason", _enum("suppression_reason", "erased"), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_suppression"),
        sa.UniqueConstraint("email_hash", name="uq_suppression_email_hash"),
    )
    op.create_table(
        "membership",
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column("list_id", sa.Integer(), nullable=False),
        sa.Column(
            "status", _enum("membership_status", "subscribed", "unsubscribed"), nullable=False
        ),
        sa.Column("changed_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("subscriber_id", "list_id", name="pk_membership"),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscriber.id"],
            name="fk_membership_subscriber_id_subscriber",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["list_id"],
            ["mailing_list.id"],
            name="fk_membership_list_id_mailing_list",
            ondelete="RESTRICT",
        ),
    )
    op.create_index("ix_membership_list_id_status", "membership", ["list_id", "status"])
    op.create_table(
        "consent",
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column("list_id", sa.Integer(), nullable=False),
        sa.Column(
            "basis",
            _enum("lawful_basis", "consent", "legitimate-interests", "public-task"),
            nullable=False,
        ),
        sa.Column("source", sa.String(500), nullable=False),
        sa.Column("recorded_at", sa.DateTime(), nullable=False),
        sa.Column("confirmed_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("subscriber_id", "list_id", name="pk_consent"),
        sa.ForeignKeyConstraint(
            ["subscriber_id", "list_id"],
            ["membership.subscriber_id", "membership.list_id"],
            name="fk_consent_subscriber_id_list_id_membership",
            ondelete="CASCADE",
        ),
    )


def downgrade() -> None:
    op.drop_table("consent")
    op.drop_index("ix_membership_list_id_status", table_name="membership")
    op.drop_table("membership")
    op.drop_table("suppression")
    op.drop_table("subscriber")
    op.drop_table("mailing_list")
