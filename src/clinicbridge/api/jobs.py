"""``/api/v1/jobs``: a clinic's background jobs; retry and cancel."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from clinicbridge.api.deps import DB, Paging, require
from clinicbridge.api.idempotency import IdempotentRoute
from clinicbridge.api.schemas import ListOut
from clinicbridge.audit import record
from clinicbridge.core.context import Ctx
from clinicbridge.jobs import queue
from clinicbridge.jobs.schemas import JobOut

router = APIRouter(prefix="/jobs", tags=["jobs"], route_class=IdempotentRoute)
Reader = Annotated[Ctx, require("jobs:read")]
Manager = Annotated[Ctx, require("jobs:manage")]
State = Literal["pending", "running", "succeeded", "failed", "dead", "cancelled"]


@router.get("", response_model=ListOut[JobOut])
def list_jobs(
    db: DB,
    ctx: Reader,
    page: Paging,
    state: Annotated[State | None, Query()] = None,
    kind: Annotated[str | None, Query(max_length=128)] = None,
) -> ListOut[JobOut]:
    with db.read() as session:
        result = queue.list_jobs(
            session,
            tenant_id=ctx.tenant_id,
            state=state,
            kind=kind,
            limit=page.limit,
            starting_after=page.starting_after,
        )
        return ListOut.of(result, JobOut.model_validate)


@router.get("/{job_id}", response_model=JobOut)
def get_job(job_id: str, db: DB, ctx: Reader) -> JobOut:
    with db.read() as session:
        return JobOut.model_validate(queue.get_job(session, job_id, tenant_id=ctx.tenant_id))


@router.post("/{job_id}/retry", response_model=JobOut)
def retry_job(job_id: str, db: DB, ctx: Manager) -> JobOut:
    """Run a dead, failed or cancelled job again now, with a fresh attempt budget."""
    with db.write() as session:
        job = queue.retry_job(session, job_id, ctx.now, tenant_id=ctx.tenant_id)
        record(session, ctx, "job.retry", "job", job.id, diff={"kind": job.kind})
        return JobOut.model_validate(job)


@router.post("/{job_id}/cancel", response_model=JobOut)
def cancel_job(job_id: str, db: DB, ctx: Manager) -> JobOut:
    with db.write() as session:
        job = queue.cancel_job(session, job_id, ctx.now, tenant_id=ctx.tenant_id)
        record(session, ctx, "job.cancel", "job", job.id, diff={"kind": job.kind})
        return JobOut.model_validate(job)
