"""The web side's outgoing mail, sent in the background.

Revision ID: 0020
Revises: 0019
Create Date: 2027-02-01

- ``web_mail``: each confirmation, manage link, welcome and alert the web side asks for,
  sent by a background sender with retries and an expiry; the limits count its rows.
- ``rate_event`` is dropped: the limits count the emails themselves, so a form post that
  sends nothing no longer counts against anyone.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "web_mail",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("recipient", sa.String(320), nullable=False),
        sa.Column("message", sa.LargeBinary(), nullable=True),
        sa.Column("mailbox_key", sa.String(64), nullable=False),
        sa.Column("network_key", sa.String(64), nullable=False),
        sa.Column("queued_at", sa.DateTime(), nullable=False),
        sa.Column("next_try_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("claimed_until", sa.DateTime(), nullable=True),
        sa.Column("last_error", sa.String(500), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_web_mail"),
    )
    op.create_index("ix_web_mail_status_next_try_at", "web_mail", ["status", "next_try_at"])
    op.create_index("ix_web_mail_mailbox_key_queued_at", "web_mail", ["mailbox_key", "queued_at"])
    op.create_index("ix_web_mail_network_key_queued_at", "web_mail", ["network_key", "queued_at"])
    op.create_index("ix_web_mail_kind_queued_at", "web_mail", ["kind", "queued_at"])
    op.drop_index("ix_rate_event_bucket_key_at", table_name="rate_event")
    op.drop_table("rate_event")


def downgrade() -> None:
    op.create_table(
        "rate_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("bucket", sa.String(20), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_rate_event"),
    )
    op.create_index("ix_rate_event_bucket_key_at", "rate_event", ["bucket", "key", "at"])
    for name in ("status_next_try_at", "mailbox_key_queued_at", "network_key_queued_at"):
        op.drop_index(f"ix_web_mail_{name}", "web_mail")
    op.drop_index("ix_web_mail_kind_queued_at", "web_mail")
    op.drop_table("web_mail")
