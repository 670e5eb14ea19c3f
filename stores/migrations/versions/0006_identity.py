"""Identity and ownership: API keys, who created each run and cron, collection owners, rate
windows, and GIN indexes for the metadata filters of ownership.

Revision ID: 0006_identity
Revises: 0005_thread_stream
Create Date: 2026-11-29 19:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006_identity"
down_revision: str | None = "0005_thread_stream"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_METADATA_TABLES = ("agents", "conversations", "crons")


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("admin", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("name", sa.String(length=200), server_default="", nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_api_keys_user_id_users", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("key_id", name="pk_api_keys"),
    )
    op.create_index("ix_api_keys_user_id", "api_keys", ["user_id"])
    op.create_table(
        "collections",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column(
            "metadata",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("name", name="pk_collections"),
    )
    # Collections that already hold documents were made before owners: the server's own.
    op.execute(
        "INSERT INTO collections (name, metadata) SELECT DISTINCT collection, "
        '\'{"created_by": "system"}\'::jsonb FROM documents ON CONFLICT DO NOTHING'
    )
    op.create_table(
        "rate_windows",
        sa.Column("identity", sa.String(length=200), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("identity", name="pk_rate_windows"),
    )
    op.add_column("runs", sa.Column("user_id", sa.String(length=200), nullable=True))
    op.add_column("runs", sa.Column("auth", postgresql.JSONB(astext_type=sa.Text()), nullable=True))
    op.create_index(
        "ix_runs_user_id_in_flight",
        "runs",
        ["user_id"],
        postgresql_where=sa.text("status IN ('pending', 'running')"),
    )
    op.add_column(
        "crons", sa.Column("auth", postgresql.JSONB(astext_type=sa.Text()), nullable=True)
    )
    op.create_index("ix_crons_user_id", "crons", ["user_id"])
    for table in _METADATA_TABLES:
        op.create_index(
            f"ix_{table}_metadata",
            table,
            ["metadata"],
            postgresql_using="gin",
            postgresql_ops={"metadata": "jsonb_path_ops"},
        )


def downgrade() -> None:
    for table in _METADATA_TABLES:
        op.drop_index(f"ix_{table}_metadata", table_name=table)
    op.drop_index("ix_crons_user_id", table_name="crons")
    op.drop_column("crons", "auth")
    op.drop_index("ix_runs_user_id_in_flight", table_name="runs")
    op.drop_column("runs", "auth")
    op.drop_column("runs", "user_id")
    op.drop_table("rate_windows")
    op.drop_table("collections")
    op.drop_index("ix_api_keys_user_id", table_name="api_keys")
    op.drop_table("api_keys")
