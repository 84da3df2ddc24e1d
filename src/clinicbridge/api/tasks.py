"""``/api/v1/tasks``: what staff have to do (e.g. a patient asked by SMS to reschedule)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from clinicbridge.api.deps import DB, Paging, require
from clinicbridge.api.idempotency import IdempotentRoute
from clinicbridge.api.schemas import ListOut
from clinicbridge.core.context import Ctx
from clinicbridge.tasks import service
from clinicbridge.tasks.models import StaffTask

router = APIRouter(tags=["tasks"], route_class=IdempotentRoute)
Reader = Annotated[Ctx, require("tasks:read")]
Writer = Annotated[Ctx, require("tasks:write")]
TaskId = Annotated[str, Path(max_length=64)]


class TaskOut(BaseModel):
    id: str
    kind: str
    status: str
    title: str
    patient_id: str | None
    booking_id: str | None
    source_type: str
    source_id: str
    resolution: str | None
    resolved_by: str | None
    resolved_at: datetime | None
    created_at: datetime
    updated_at: datetime


class TaskResolve(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    status: Literal["done", "dismissed"]
    resolution: Annotated[str | None, Field(max_length=500)] = None


def _out(row: StaffTask) -> TaskOut:
    return TaskOut.model_validate(row, from_attributes=True)


@router.get("/tasks", response_model=ListOut[TaskOut])
def list_tasks(
    db: DB,
    ctx: Reader,
    page: Paging,
    status: Literal["open", "done", "dismissed"] | None = None,
    kind: Annotated[str | None, Query(max_length=64)] = None,
    patient_id: Annotated[str | None, Query(max_length=64)] = None,
) -> ListOut[TaskOut]:
    """Tasks by id (oldest first); ``status=open`` is the to-do list."""
    with db.read() as session:
        found = service.list_tasks(
            session,
            ctx,
            limit=page.limit,
            starting_after=page.starting_after,
            status=status,
            kind=kind,
            patient_id=patient_id,
        )
        return ListOut.of(found, _out)


@router.get("/tasks/{task_id}", response_model=TaskOut)
def get_task(task_id: TaskId, db: DB, ctx: Reader) -> TaskOut:
    with db.read() as session:
        return _out(service.get_task(session, ctx, task_id))


@router.post("/tasks/{task_id}/resolve", response_model=TaskOut)
def resolve_task(task_id: TaskId, body: TaskResolve, db: DB, ctx: Writer) -> TaskOut:
    """Close an open task as ``done`` or ``dismissed``, with a note; once only (409)."""
    with db.write() as session:
        row = service.resolve_task(
            session, ctx, task_id, status=body.status, resolution=body.resolution
        )
        return _out(row)
