"""Threads get a TTL: minutes after their last update, a sweep deletes or prunes them.

Revision ID: 0004_thread_ttl
Revises: 0003_b2
Create Date: 2026-11-26 10:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_thread_ttl"
down_revision: str | None = "0003_b2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("conversations", sa.Column("ttl_minutes", sa.Float(), nullable=True))
    op.add_column("conversations", sa.Column("ttl_strategy", sa.String(length=20), nullable=True))
    op.add_column(
        "conversations", sa.Column("ttl_swept_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.create_check_constraint(
        "ck_conversations_ttl_strategy",
        "conversations",
        "ttl_strategy IS NULL OR ttl_strategy IN ('delete', 'keep_latest')",
    )
    op.create_index(
        "ix_conversations_ttl_updated_at",
        "conversations",
        ["updated_at"],
        unique=False,
        postgresql_where=sa.text("ttl_minutes IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_conversations_ttl_updated_at", table_name="conversations")
    op.drop_constraint("ck_conversations_ttl_strategy", "conversations", type_="check")
    op.drop_column("conversations", "ttl_swept_at")
    op.drop_column("conversations", "ttl_strategy")
    op.drop_column("conversations", "ttl_minutes")
