"""Relay webhooks: the one-time values their signed requests carry.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07

- ``webhook_nonce``: Mailgun's token or an SNS MessageId, per provider, with a hash of the
  body it came with, so a replayed request changes nothing and another body under the same
  token is refused (:mod:`mailer.store.webhook_nonces`).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_nonce",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(20), nullable=False),
        sa.Column("nonce", sa.String(200), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_nonce"),
        sa.UniqueConstraint("provider", "nonce", name="uq_webhook_nonce_provider_nonce"),
    )
    op.create_index("ix_webhook_nonce_received_at", "webhook_nonce", ["received_at"])


def downgrade() -> None:
    op.drop_index("ix_webhook_nonce_received_at", "webhook_nonce")
    op.drop_table("webhook_nonce")
