"""The public web side: public lists, published issues, sign-ups, unsubscribes, rate limits
and aggregate link clicks.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01

Existing issues stay drafts until their next send starts or `mailer publish` names them;
an issue that was already sent is published by this migration, so the archive keeps it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def _enum(name: str, *values: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=False, length=20)


def upgrade() -> None:
    with op.batch_alter_table("mailing_list") as batch:
        batch.add_column(
            sa.Column("public", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.create_table(
        "publication",
        sa.Column("slug", sa.String(64), nullable=False),
        sa.Column("published_at", sa.DateTime(), nullable=False),
        sa.Column("published_by", _enum("published_by", "send", "command"), nullable=False),
        sa.PrimaryKeyConstraint("slug", name="pk_publication"),
    )
    op.execute(
        "INSERT INTO publication (slug, published_at, published_by) "
        "SELECT slug, MIN(COALESCE(started_at, created_at)), 'send' FROM send "
        "WHERE started_at IS NOT NULL GROUP BY slug"
    )
    op.create_table(
        "signup",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("organisation", sa.String(200), nullable=False),
        sa.Column("lists", sa.String(2000), nullable=False),
        sa.Column("wording", sa.Text(), nullable=False),
        sa.Column("requested_at", sa.DateTime(), nullable=False),
        sa.Column("requested_ip", sa.String(64), nullable=False),
        sa.Column("confirmed_at", sa.DateTime(), nullable=True),
        sa.Column("confirmed_ip", sa.String(64), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscriber.id"],
            name="fk_signup_subscriber_id_subscriber",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_signup"),
    )
    op.create_index("ix_signup_email", "signup", ["email"])
    op.create_index("ix_signup_subscriber_id", "signup", ["subscriber_id"])
    op.create_table(
        "unsubscription",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column("list_id", sa.Integer(), nullable=True),
        sa.Column("send_id", sa.Integer(), nullable=True),
        sa.Column(
            "method",
            _enum("unsubscribe_method", "one-click", "web-page", "preferences", "email"),
            nullable=False,
        ),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscriber.id"],
            name="fk_unsubscription_subscriber_id_subscriber",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["list_id"],
            ["mailing_list.id"],
            name="fk_unsubscription_list_id_mailing_list",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["send_id"], ["send.id"], name="fk_unsubscription_send_id_send", ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_unsubscription"),
    )
    op.create_index("ix_unsubscription_subscriber_id", "unsubscription", ["subscriber_id"])
    op.create_table(
        "rate_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("bucket", sa.String(20), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_rate_event"),
    )
    op.create_index("ix_rate_event_bucket_key_at", "rate_event", ["bucket", "key", "at"])
    op.create_table(
        "link_click",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("slug", sa.String(64), nullable=False),
        sa.Column("url", sa.String(2000), nullable=False),
        sa.Column("clicks", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_link_click"),
        sa.UniqueConstraint("slug", "url", name="uq_link_click_slug_url"),
    )


def downgrade() -> None:
    op.drop_table("link_click")
    op.drop_index("ix_rate_event_bucket_key_at", table_name="rate_event")
    op.drop_table("rate_event")
    op.drop_index("ix_unsubscription_subscriber_id", table_name="unsubscription")
    op.drop_table("unsubscription")
    op.drop_index("ix_signup_subscriber_id", table_name="signup")
    op.drop_index("ix_signup_email", table_name="signup")
    op.drop_table("signup")
    op.drop_table("publication")
    with op.batch_alter_table("mailing_list") as batch:
        batch.drop_column("public")
