"""Several senders on one send: a lease per worker, the worker of each ledger row, and
rate limits shared by every worker of a relay.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-10

- ``send_worker``: each process working on a send, and its lease. A send held by one
  process before this revision (``send.claimed_by``) becomes that process's lease, expiring
  a minute after its last heartbeat, as the single claim did; the column is dropped.
- ``delivery.claimed_by``: the worker that claimed the row. Rows in flight get their
  send's holder, so a crash before the upgrade is handled as it always was.
- ``delivery``'s index on (send_id, status) gains ``id``, so the next pending rows of a
  send are read in ledger order from the index alone.
- ``relay_slot``: the per-second and per-hour limits of each relay, shared by every worker.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

# How long a heartbeat kept a send's single claim before this revision.
_STALE_AFTER = dt.timedelta(seconds=60)


def upgrade() -> None:
    op.create_table(
        "send_worker",
        sa.Column("send_id", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(200), nullable=False),
        sa.Column("connections", sa.Integer(), nullable=False),
        sa.Column("joined_at", sa.DateTime(), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["send_id"], ["send.id"], name="fk_send_worker_send_id_send", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("send_id", "worker", name="pk_send_worker"),
    )
    op.create_table(
        "relay_slot",
        sa.Column("relay", sa.String(300), nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("holder", sa.String(200), nullable=True),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("ended_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("relay", "kind", "slot", name="pk_relay_slot"),
    )
    with op.batch_alter_table("delivery") as batch:
        batch.add_column(sa.Column("claimed_by", sa.String(200), nullable=True))
        batch.drop_index("ix_delivery_send_id_status")
        batch.create_index("ix_delivery_send_id_status_id", ["send_id", "status", "id"])

    conn = op.get_bind()
    send = sa.table(
        "send",
        sa.column("id", sa.Integer()),
        sa.column("claimed_by", sa.String()),
        sa.column("heartbeat_at", sa.DateTime()),
        sa.column("started_at", sa.DateTime()),
    )
    worker = sa.table(
        "send_worker",
        sa.column("send_id", sa.Integer()),
        sa.column("worker", sa.String()),
        sa.column("connections", sa.Integer()),
        sa.column("joined_at", sa.DateTime()),
        sa.column("heartbeat_at", sa.DateTime()),
        sa.column("expires_at", sa.DateTime()),
    )
    held = conn.execute(
        sa.select(send.c.id, send.c.claimed_by, send.c.heartbeat_at, send.c.started_at).where(
            send.c.claimed_by.is_not(None)
        )
    ).all()
    for row in held:
        beat = row.heartbeat_at or row.started_at or dt.datetime(1970, 1, 1)
        if isinstance(beat, str):  # SQLite hands back its stored text here
            beat = dt.datetime.fromisoformat(beat)
        conn.execute(
            sa.insert(worker).values(
                send_id=row.id,
                worker=row.claimed_by,
                connections=0,
                joined_at=beat,
                heartbeat_at=beat,
                expires_at=beat + _STALE_AFTER,
            )
        )
    op.execute(
        "UPDATE delivery SET claimed_by = "
        "(SELECT claimed_by FROM send WHERE send.id = delivery.send_id) "
        "WHERE status = 'in-flight'"
    )
    with op.batch_alter_table("send") as batch:
        batch.drop_column("claimed_by")


def downgrade() -> None:
    with op.batch_alter_table("send") as batch:
        batch.add_column(sa.Column("claimed_by", sa.String(200), nullable=True))
    op.execute(
        "UPDATE send SET claimed_by = (SELECT min(worker) FROM send_worker "
        "WHERE send_worker.send_id = send.id)"
    )
    with op.batch_alter_table("delivery") as batch:
        batch.drop_index("ix_delivery_send_id_status_id")
        batch.create_index("ix_delivery_send_id_status", ["send_id", "status"])
        batch.drop_column("claimed_by")
    op.drop_table("relay_slot")
    op.drop_table("send_worker")
