"""Admin UI: patients' conversations (their SMS/WhatsApp messages and the clinic's
answers), the reply box, and the staff tasks they raised (a patient texting R).

Names of patients shown are audited as reads (purpose ``conversations``); opening a
conversation is audited by ``messaging.conversations`` itself.
"""

from __future__ import annotations

from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from clinicbridge.api.deps import db_of
from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import ClinicBridgeError, InvalidInputError
from clinicbridge.core.tenancy import scoped_select
from clinicbridge.messaging import conversations
from clinicbridge.patients.models import Patient
from clinicbridge.patients.service import audit_reads
from clinicbridge.tasks import service as tasks
from clinicbridge.tasks.models import StaffTask
from clinicbridge.web.auth import checked_form, own_tenant, page_context, require_session
from clinicbridge.web.routes import templates

router = APIRouter(prefix="/admin", include_in_schema=False)
PURPOSE = "conversations"
LIST_SIZE = 50
THREAD = "_conversation_thread.html"
Reader = Annotated[Ctx, require_session("messages:read")]
Sender = Annotated[Ctx, require_session("messages:send")]
TaskWriter = Annotated[Ctx, require_session("tasks:write")]
TASKS = "_tasks.html"


def _names(session: Session, ctx: Ctx, patient_ids: list[str]) -> dict[str, str]:
    if not patient_ids:
        return {}
    rows = session.execute(
        sa.select(Patient.id, Patient.first_name, Patient.last_name).where(
            Patient.tenant_id == ctx.tenant_id, Patient.id.in_(patient_ids)
        )
    ).all()
    audit_reads(session, ctx, [r.id for r in rows], purpose=PURPOSE)
    return {r.id: f"{r.first_name} {r.last_name}" for r in rows}


def _open_tasks(session: Session, ctx: Ctx, patient_id: str | None = None) -> list[StaffTask]:
    if not ctx.has("tasks:read"):
        return []
    stmt = scoped_select(StaffTask, ctx.tenant_id).where(StaffTask.status == "open")
    if patient_id is not None:
        stmt = stmt.where(StaffTask.patient_id == patient_id)
    return list(session.scalars(stmt.order_by(StaffTask.created_at, StaffTask.id).limit(100)))


@router.get("/tenants/{tenant_id}/conversations")
def conversations_page(request: Request, tenant_id: str, ctx: Reader) -> HTMLResponse:
    """Who wrote to the clinic, latest first, and the open tasks."""
    own_tenant(ctx, tenant_id)
    with db_of(request).write() as session:
        data = page_context(request, ctx, session)
        rows = conversations.list_conversations(session, ctx, limit=LIST_SIZE)
        open_tasks = _open_tasks(session, ctx)
        names = _names(
            session, ctx, sorted({r.patient_id for r in rows} | _patients_of(open_tasks))
        )
    data |= {"conversations": rows, "tasks": open_tasks, "names": names}
    return templates.TemplateResponse(request, "conversations.html", data)


def _patients_of(rows: list[StaffTask]) -> set[str]:
    return {t.patient_id for t in rows if t.patient_id}


def _thread_data(
    request: Request, ctx: Ctx, patient_id: str, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    with db_of(request).write() as session:
        data = page_context(request, ctx, session)
        items = conversations.conversation(session, ctx, patient_id)
        open_tasks = _open_tasks(session, ctx, patient_id)
        name = _names(session, ctx, [patient_id]).get(patient_id, patient_id)
    return data | {
        "patient_id": patient_id,
        "patient_name": name,
        "items": items,
        "tasks": open_tasks,
        "names": {patient_id: name},
        **(extra or {}),
    }


@router.get("/tenants/{tenant_id}/conversations/{patient_id}")
def conversation_page(
    request: Request,
    tenant_id: str,
    patient_id: str,
    ctx: Reader,
) -> HTMLResponse:
    own_tenant(ctx, tenant_id)
    data = _thread_data(request, ctx, patient_id[:64])
    return templates.TemplateResponse(request, "conversation.html", data)


@router.post("/tenants/{tenant_id}/conversations/{patient_id}/reply")
async def reply(
    request: Request,
    tenant_id: str,
    patient_id: str,
    ctx: Sender,
) -> HTMLResponse:
    """Queue the answer (by the patient's last channel); the thread, refreshed."""
    form = await checked_form(request, ctx, tenant_id)
    body = str(form.get("body", ""))[:1600]
    try:
        with db_of(request).write() as session:
            conversations.reply(session, ctx, patient_id[:64], body=body)
    except InvalidInputError as exc:
        data = _thread_data(request, ctx, patient_id[:64],
                            {"reply_errors": {e.field: e.message for e in exc.errors},
                             "typed": body})  # fmt: skip
        return templates.TemplateResponse(request, THREAD, data, status_code=422)
    data = _thread_data(request, ctx, patient_id[:64], {"replied": True})
    return templates.TemplateResponse(request, THREAD, data)


@router.post("/tenants/{tenant_id}/tasks/{task_id}/resolve")
async def resolve_task(
    request: Request,
    tenant_id: str,
    task_id: str,
    ctx: TaskWriter,
) -> HTMLResponse:
    """Mark a task done (or dismissed); the list of open tasks, refreshed."""
    form = await checked_form(request, ctx, tenant_id)
    status = "dismissed" if form.get("status") == "dismissed" else "done"
    patient_id = str(form.get("patient_id", ""))[:64] or None
    error = None
    try:
        with db_of(request).write() as session:
            tasks.resolve_task(session, ctx, task_id[:64], status=status,
                               resolution=str(form.get("resolution", ""))[:500])  # fmt: skip
    except ClinicBridgeError as exc:
        error = exc.detail
    with db_of(request).write() as session:
        data = page_context(request, ctx, session)
        open_tasks = _open_tasks(session, ctx, patient_id)
        names = _names(session, ctx, sorted(_patients_of(open_tasks)))
    data |= {"tasks": open_tasks, "names": names, "task_error": error,
             "patient_id": patient_id}  # fmt: skip
    return templates.TemplateResponse(request, TASKS, data, status_code=409 if error else 200)
