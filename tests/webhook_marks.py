"""The durability test's handler for Stripe ``payment_intent.succeeded`` events.

Only the server subprocess registers it (tests/webhook_serve.py calls
``register``): importing this module changes nothing, so the test process's own
registry, shared with every other test, stays clean. Each run is
counted in ``webhook_runs`` (committed before the work, so a run cut short by a
kill still counts); the work itself, a row in ``webhook_marks`` keyed by the
provider's event id, is idempotent as every handler must be.
"""

from __future__ import annotations

import sqlalchemy as sa

from clinicbridge.core.ids import new_id
from clinicbridge.integrations.registry import StoredEvent, integrations
from clinicbridge.jobs.registry import JobContext

MARKS = sa.table("webhook_marks", sa.column("provider_event_id"))
RUNS = sa.table("webhook_runs", sa.column("run_id"), sa.column("provider_event_id"))


def create_tables(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE webhook_marks (provider_event_id VARCHAR(255) PRIMARY KEY)"
        )
        conn.exec_driver_sql(
            "CREATE TABLE webhook_runs"
            " (run_id VARCHAR(32) PRIMARY KEY, provider_event_id VARCHAR(255) NOT NULL)"
        )


def register() -> None:
    integrations.on("stripe", "payment_intent.succeeded")(mark)


def mark(event: StoredEvent, job: JobContext) -> None:
    with job.db.write() as session:
        session.execute(
            sa.insert(RUNS).values(run_id=new_id("run"), provider_event_id=event.provider_event_id)
        )
    with job.db.write() as session:
        session.execute(
            sa.text(
                "INSERT INTO webhook_marks (provider_event_id) VALUES (:e) ON CONFLICT DO NOTHING"
            ),
            {"e": event.provider_event_id},
        )
