"""Probes and metrics: ``/healthz`` (alive), ``/readyz`` (can serve), ``/metrics``."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from clinicbridge.api.deps import DB, clock_of
from clinicbridge.core.metrics import Metrics
from clinicbridge.db.migrate import current_revision
from clinicbridge.jobs.heartbeat import freshest_heartbeat_age
from clinicbridge.jobs.queue import counts_by_state_and_kind

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _readiness(request: Request, db: DB) -> tuple[bool, dict[str, Any]]:
    head: str = request.app.state.migration_head
    max_age: float = request.app.state.settings.worker_heartbeat_seconds * 3
    try:
        with db.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
            revision = current_revision(conn)
    except sa.exc.SQLAlchemyError as exc:
        return False, {"database": {"ok": False, "error": type(exc).__name__}}
    checks: dict[str, Any] = {
        "database": {"ok": True},
        "migrations": {"ok": revision == head, "current": revision, "head": head},
    }
    try:
        with db.read() as session:
            age = freshest_heartbeat_age(session, clock_of(request).now())
        checks["worker"] = {
            "ok": age is not None and age <= max_age,
            "heartbeat_age_seconds": None if age is None else round(age, 1),
        }
    except sa.exc.SQLAlchemyError as exc:  # e.g. the table is not migrated yet
        checks["worker"] = {"ok": False, "error": type(exc).__name__}
    return all(c["ok"] for c in checks.values()), checks


@router.get("/readyz")
def readyz(request: Request, db: DB) -> JSONResponse:
    ready, checks = _readiness(request, db)
    if ready:
        return JSONResponse({"status": "ready", "checks": checks})
    failing = ", ".join(name for name, c in checks.items() if not c["ok"])
    return JSONResponse(
        {
            "type": "https://clinicbridge.dev/problems/not-ready",
            "title": "Not ready",
            "status": 503,
            "detail": f"Failing checks: {failing}.",
            "checks": checks,
        },
        status_code=503,
        media_type="application/problem+json",
    )


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request, db: DB) -> Response:
    registry: Metrics = request.app.state.metrics
    with db.read() as session:
        age = freshest_heartbeat_age(session, clock_of(request).now())
        job_counts = counts_by_state_and_kind(session)
    registry.worker_heartbeat_age.set(-1 if age is None else age)
    registry.jobs_by_state.clear()
    for state, kind, count in job_counts:
        registry.jobs_by_state.labels(state, kind).set(count)
    return Response(registry.render(), media_type=CONTENT_TYPE_LATEST)
