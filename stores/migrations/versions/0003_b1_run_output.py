"""Runs keep their result (final values, interrupts or error) so `/wait` and `/join` can return it.

Revision ID: 0003_b1
Revises: 0002
Create Date: 2026-11-25 21:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003_b1"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("output", postgresql.JSONB(), nullable=True))
    op.create_index(
        "ix_runs_status_lease_expires_at", "runs", ["status", "lease_expires_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_runs_status_lease_expires_at", table_name="runs")
    op.drop_column("runs", "output")
