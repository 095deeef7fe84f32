"""Scheduling: one-off and monthly schedules run by `mailer worker`.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22

Written by hand to match mailer.models section 4.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _enum(name: str, *values: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=False, length=20)


def upgrade() -> None:
    op.create_table(
        "schedule",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", _enum("schedule_kind", "once", "monthly"), nullable=False),
        sa.Column("slug", sa.String(64), nullable=True),
        sa.Column("rule", sa.String(100), nullable=True),
        sa.Column("lists", sa.String(2000), nullable=False),
        sa.Column(
            "status",
            _enum("schedule_status", "active", "done", "missed", "failed", "cancelled"),
            nullable=False,
        ),
        sa.Column("next_run_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("last_run_at", sa.DateTime(), nullable=True),
        sa.Column("last_outcome", sa.String(1000), nullable=False),
        sa.Column("last_send_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_schedule"),
        sa.ForeignKeyConstraint(
            ["last_send_id"],
            ["send.id"],
            name="fk_schedule_last_send_id_send",
            ondelete="SET NULL",
        ),
    )
    op.create_index("ix_schedule_next_run_at", "schedule", ["next_run_at"])


def downgrade() -> None:
    op.drop_table("schedule")
