"""Run event names are text: a subgraph event is `mode|ns|ns...`, longer than 200 when deep.

Revision ID: 0003_b2
Revises: 0003_b1
Create Date: 2026-11-25 21:45:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_b2"
down_revision: str | None = "0003_b1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.alter_column("run_events", "event", type_=sa.Text(), existing_nullable=False)


def downgrade() -> None:
    op.execute("UPDATE run_events SET event = left(event, 200) WHERE length(event) > 200")
    op.alter_column("run_events", "event", type_=sa.String(length=200), existing_nullable=False)
