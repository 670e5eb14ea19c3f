"""The thread-wide stream: every run gets its place in its thread's stream when first claimed,
and thread-level events (state updates) are kept beside the run events.

Revision ID: 0005_thread_stream
Revises: 0004_thread_ttl
Create Date: 2026-11-29 20:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005_thread_stream"
down_revision: str | None = "0004_thread_ttl"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("CREATE SEQUENCE thread_stream_positions AS bigint")
    op.add_column("runs", sa.Column("stream_position", sa.BigInteger(), nullable=True))
    op.create_index(
        "ix_runs_thread_id_stream_position",
        "runs",
        ["thread_id", "stream_position"],
        unique=False,
        postgresql_where=sa.text("stream_position IS NOT NULL"),
    )
    op.create_table(
        "thread_events",
        sa.Column("thread_id", sa.Uuid(), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("event", sa.Text(), nullable=False),
        sa.Column("data", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["thread_id"],
            ["conversations.id"],
            name=op.f("fk_thread_events_thread_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("thread_id", "position", name=op.f("pk_thread_events")),
    )
    op.create_index(
        op.f("ix_thread_events_created_at"), "thread_events", ["created_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_thread_events_created_at"), table_name="thread_events")
    op.drop_table("thread_events")
    op.drop_index("ix_runs_thread_id_stream_position", table_name="runs")
    op.drop_column("runs", "stream_position")
    op.execute("DROP SEQUENCE thread_stream_positions")
