"""Alembic environment: uses the caller's connection, or opens one from the URL."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from clinicbridge.db import models  # noqa: F401  (fills Base.metadata)
from clinicbridge.db.base import Base

config = context.config


def _run(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


existing = config.attributes.get("connection")
if existing is not None:
    _run(existing)
else:
    engine = sa.create_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.begin() as conn:
        _run(conn)
    engine.dispose()
