"""Raising, listing and resolving staff tasks.

``raise_task`` is idempotent on the task's source (the inbound message, the refund
request...), so a job that raises a task and runs twice leaves one task. Resolving
is once: a task already done or dismissed is a 409 ``task-state``.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from clinicbridge.audit.service import record
from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import ConflictError, InvalidInputError, NotFoundError
from clinicbridge.core.ids import new_id
from clinicbridge.core.pagination import Page, paginate
from clinicbridge.core.tenancy import scoped_select
from clinicbridge.tasks.models import TASK_STATUSES, StaffTask

RESOURCE = "staff_task"


class TaskStateError(ConflictError):
    type_slug = "task-state"
    title = "Task already resolved"


def raise_task(
    session: Session,
    ctx: Ctx,
    *,
    kind: str,
    title: str,
    source_type: str,
    source_id: str,
    patient_id: str | None = None,
    booking_id: str | None = None,
) -> StaffTask:
    """An open task for staff; the one already raised for this source if there is one.
    ``title`` is shown in lists: never put patient data in it."""
    existing = session.scalars(
        scoped_select(StaffTask, ctx.tenant_id).where(
            StaffTask.source_type == source_type, StaffTask.source_id == source_id
        )
    ).first()
    if existing is not None:
        return existing
    task = StaffTask(
        id=new_id("tsk"),
        tenant_id=ctx.tenant_id,
        kind=kind,
        status="open",
        title=title[:200],
        patient_id=patient_id,
        booking_id=booking_id,
        source_type=source_type,
        source_id=source_id,
        created_at=ctx.now,
        updated_at=ctx.now,
    )
    session.add(task)
    session.flush()
    record(session, ctx, "task.create", RESOURCE, task.id,
           diff={"kind": kind, "source_type": source_type, "source_id": source_id})  # fmt: skip
    return task


def get_task(session: Session, ctx: Ctx, task_id: str) -> StaffTask:
    task = session.scalars(
        scoped_select(StaffTask, ctx.tenant_id).where(StaffTask.id == task_id)
    ).first()
    if task is None:
        raise NotFoundError("No such staff task.")
    return task


def list_tasks(
    session: Session,
    ctx: Ctx,
    *,
    limit: int,
    starting_after: str | None,
    status: str | None = None,
    kind: str | None = None,
    patient_id: str | None = None,
) -> Page[StaffTask]:
    stmt = scoped_select(StaffTask, ctx.tenant_id)
    if status is not None:
        stmt = stmt.where(StaffTask.status == status)
    if kind is not None:
        stmt = stmt.where(StaffTask.kind == kind)
    if patient_id is not None:
        stmt = stmt.where(StaffTask.patient_id == patient_id)
    return paginate(session, stmt, StaffTask.id, limit, starting_after)


def resolve_task(
    session: Session, ctx: Ctx, task_id: str, *, status: str, resolution: str | None = None
) -> StaffTask:
    """Mark an open task ``done`` or ``dismissed``, with an optional note of what was done."""
    if status not in TASK_STATUSES or status == "open":
        raise InvalidInputError.one("status", "must be done or dismissed")
    note = (resolution or "").strip() or None
    if note is not None and len(note) > 500:
        raise InvalidInputError.one("resolution", "must be at most 500 characters", "too_long")
    stmt = scoped_select(StaffTask, ctx.tenant_id).where(StaffTask.id == task_id)
    task = session.scalars(stmt.with_for_update()).first()
    if task is None:
        raise NotFoundError("No such staff task.")
    if task.status != "open":
        raise TaskStateError(f"This task is already {task.status}.")
    task.status, task.resolution = status, note
    task.resolved_by, task.resolved_at = f"{ctx.actor_type}:{ctx.actor_id}", ctx.now
    task.updated_at = ctx.now
    record(session, ctx, "task.resolve", RESOURCE, task.id, diff={"status": ["open", status]})
    return task
