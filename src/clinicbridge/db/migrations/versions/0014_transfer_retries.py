"""provider payouts: whether a connected account can receive transfers, and the
attempt of each transfer (a refused transfer is sent again under a new key)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04 20:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("connected_accounts", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("transfers_active", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("transfers", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("attempt", sa.Integer(), nullable=False, server_default=sa.text("1"))
        )


def downgrade() -> None:
    with op.batch_alter_table("transfers", schema=None) as batch_op:
        batch_op.drop_column("attempt")
    with op.batch_alter_table("connected_accounts", schema=None) as batch_op:
        batch_op.drop_column("transfers_active")
