"""Admin UI: a clinic's messages log with status timelines, and its message templates
(edit with a live preview, save, reset to the built-in one, send a test).

The log never shows message bodies, and recipients only masked.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from clinicbridge.api.deps import db_of
from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import ClinicBridgeError, InvalidInputError
from clinicbridge.core.tenancy import get_tenant, scoped_select
from clinicbridge.messaging import clinic_templates, test_send
from clinicbridge.messaging.defaults import DEFAULT_LANGUAGES, DEFAULT_TEMPLATES
from clinicbridge.messaging.kinds import CHANNELS, KIND_VARIABLES, variables_for
from clinicbridge.messaging.languages import normalize_tag, resolve
from clinicbridge.messaging.models import STATUSES, ClinicTemplate, Message, MessageEvent
from clinicbridge.web.auth import checked_form, own_tenant, page_context, require_session
from clinicbridge.web.routes import templates

router = APIRouter(prefix="/admin", include_in_schema=False)
Reader = Annotated[Ctx, require_session("messages:read")]
Editor = Annotated[Ctx, require_session("tenant:write")]
Channel = Literal["sms", "email", "whatsapp", "push"]
PAGE_SIZE = 25
KINDS = tuple(KIND_VARIABLES)  # the kinds with sample data (custom ones: through the API)
EDITOR = "_message_template_editor.html"
PREVIEW = "_message_template_preview.html"
TEST = "_message_template_test.html"


def mask_address(address: str | None) -> str:
    """``q***@example.com``, ``+1416***0199``: enough to recognise, not to read."""
    if not address:
        return ""
    if "@" in address:
        local, _, domain = address.rpartition("@")
        return f"{local[:1]}***@{domain}"
    if len(address) >= 10:
        return f"{address[:5]}***{address[-4:]}"
    return f"{address[:2]}***{address[-2:]}" if len(address) > 4 else "***"


# Messages log ---------------------------------------------------------------


@router.get("/tenants/{tenant_id}/messages")
def messages_page(
    request: Request,
    tenant_id: str,
    ctx: Reader,
    status: Annotated[str, Query(max_length=16)] = "",
    channel: Annotated[str, Query(max_length=16)] = "",
    patient_id: Annotated[str, Query(max_length=64)] = "",
    before: Annotated[str, Query(max_length=64)] = "",
) -> HTMLResponse:
    """Newest first, ``PAGE_SIZE`` a page (``before`` is the last id of the previous page)."""
    own_tenant(ctx, tenant_id)
    patient_id = patient_id.strip()
    stmt = scoped_select(Message, ctx.tenant_id)
    if status:
        stmt = stmt.where(Message.status == status)
    if channel:
        stmt = stmt.where(Message.channel == channel)
    if patient_id:
        stmt = stmt.where(Message.patient_id == patient_id)
    if before:
        stmt = stmt.where(Message.id < before)
    with db_of(request).read() as session:
        data = page_context(request, ctx, session)
        rows = list(session.scalars(stmt.order_by(Message.id.desc()).limit(PAGE_SIZE + 1)))
        shown = rows[:PAGE_SIZE]
        timelines: dict[str, list[MessageEvent]] = {m.id: [] for m in shown}
        if shown:
            for event in session.scalars(
                sa.select(MessageEvent)
                .where(
                    MessageEvent.tenant_id == ctx.tenant_id,
                    MessageEvent.message_id.in_(list(timelines)),
                )
                .order_by(MessageEvent.at, MessageEvent.id)
            ):
                timelines[event.message_id].append(event)
    data |= {
        "messages": [
            {
                "id": m.id,
                "created_at": m.created_at,
                "kind": m.kind,
                "channel": m.channel,
                "subject": m.subject,
                "to": mask_address(m.to_address),
                "patient_id": m.patient_id,
                "status": m.status,
                "error": m.error,
                "timeline": timelines[m.id],
            }
            for m in shown
        ],
        "older": shown[-1].id if len(rows) > PAGE_SIZE else None,
        "filters": {"status": status, "channel": channel, "patient_id": patient_id},
        "statuses": STATUSES,
        "channels": CHANNELS,
        "before": before,
    }
    name = "_messages.html" if request.headers.get("hx-request") else "messages.html"
    return templates.TemplateResponse(request, name, data)


# Templates --------------------------------------------------------------------


def _choice(kind: str, channel: str, language: str, default_language: str) -> dict[str, str]:
    """A valid (kind, channel, language) to edit; anything unknown falls back."""
    return {
        "kind": kind if kind in KINDS else KINDS[0],
        "channel": channel if channel in CHANNELS else "email",
        "language": normalize_tag(language) or default_language,
    }


def _editor_data(
    request: Request, ctx: Ctx, choice: dict[str, str], typed: dict[str, str] | None
) -> dict[str, Any]:
    """Everything the template page shows; ``typed`` is what the form sent, if anything."""
    kind, channel, language = choice["kind"], choice["channel"], choice["language"]
    with db_of(request).read() as session:
        data = page_context(request, ctx, session)
        own_rows = list(session.scalars(scoped_select(ClinicTemplate, ctx.tenant_id)))
    own = next(
        (r for r in own_rows if (r.kind, r.channel, r.language) == (kind, channel, language)),
        None,
    )
    builtin = resolve(DEFAULT_TEMPLATES, kind, channel, language, None)
    if typed is not None:
        current = typed
    elif own is not None:
        current = {"subject": own.subject or "", "body": own.body, "html": own.html or ""}
    elif builtin is not None:
        t = builtin[1]
        current = {"subject": t.subject or "", "body": t.body, "html": t.html or ""}
    else:
        current = {"subject": "", "body": "", "html": ""}
    languages = sorted(
        {*DEFAULT_LANGUAGES, data["tenant"].default_language, *(r.language for r in own_rows)}
    )
    spec = variables_for(kind)
    return data | {
        **choice,
        "kinds": KINDS,
        "channels": CHANNELS,
        "languages": languages,
        "own": own,
        "builtin_language": builtin[0] if builtin else None,
        "current": current,
        "own_keys": {(r.kind, r.channel, r.language) for r in own_rows},
        "variables": sorted(
            ns if fields is None else f"{ns}.{f}"
            for ns, fields in spec.items()
            for f in (fields or [None])
        ),
        "field_errors": {},
        "preview": None,
        "preview_errors": {},
    }


def _with_preview(data: dict[str, Any]) -> dict[str, Any]:
    c = data["current"]
    try:
        data["preview"] = clinic_templates.preview(
            data["kind"], data["channel"], data["language"],
            c["subject"] or None, c["body"], c["html"] or None,
        )  # fmt: skip
    except InvalidInputError as exc:
        data["preview_errors"] = {e.field: e.message for e in exc.errors}
    return data


def _typed(form: dict[str, Any]) -> dict[str, str]:
    return {
        "subject": str(form.get("subject", ""))[:500],
        "body": str(form.get("body", ""))[:20_000],
        "html": str(form.get("html", ""))[:200_000],
    }


async def _posted(
    request: Request, ctx: Ctx, tenant_id: str
) -> tuple[dict[str, Any], dict[str, str]]:
    form = dict((await checked_form(request, ctx, tenant_id)).items())
    with db_of(request).read() as session:
        default_language = get_tenant(session, ctx.tenant_id).default_language
    choice = _choice(
        str(form.get("kind", ""))[:64],
        str(form.get("channel", ""))[:16],
        str(form.get("language", ""))[:35],
        default_language,
    )
    return form, choice


def _editor(
    request: Request, data: dict[str, Any], partial: str = EDITOR, status: int = 200
) -> HTMLResponse:
    name = partial if request.headers.get("hx-request") else "message_templates.html"
    return templates.TemplateResponse(request, name, data, status_code=status)


@router.get("/tenants/{tenant_id}/templates")
def templates_page(
    request: Request,
    tenant_id: str,
    ctx: Reader,
    kind: Annotated[str, Query(max_length=64)] = KINDS[0],
    channel: Annotated[str, Query(max_length=16)] = "email",
    language: Annotated[str, Query(max_length=35)] = "",
) -> HTMLResponse:
    own_tenant(ctx, tenant_id)
    with db_of(request).read() as session:
        default_language = get_tenant(session, ctx.tenant_id).default_language
    choice = _choice(kind, channel, language, default_language)
    return _editor(request, _with_preview(_editor_data(request, ctx, choice, None)))


@router.post("/tenants/{tenant_id}/templates/preview")
async def preview_template(request: Request, tenant_id: str, ctx: Reader) -> HTMLResponse:
    """The form as typed, rendered with sample data; nothing is saved."""
    form, choice = await _posted(request, ctx, tenant_id)
    data = _with_preview(_editor_data(request, ctx, choice, _typed(form)))
    return _editor(request, data, PREVIEW)


@router.post("/tenants/{tenant_id}/templates/save")
async def save_template(request: Request, tenant_id: str, ctx: Editor) -> HTMLResponse:
    form, choice = await _posted(request, ctx, tenant_id)
    typed = _typed(form)
    try:
        with db_of(request).write() as session:
            clinic_templates.save_template(
                session, ctx, kind=choice["kind"], channel=choice["channel"],
                language=choice["language"], subject=typed["subject"] or None,
                body=typed["body"], html=typed["html"] or None,
            )  # fmt: skip
    except InvalidInputError as exc:
        data = _with_preview(_editor_data(request, ctx, choice, typed))
        data["field_errors"] = {e.field: e.message for e in exc.errors}
        return _editor(request, data, status=422)
    data = _with_preview(_editor_data(request, ctx, choice, None))
    data["saved"] = True
    return _editor(request, data)


@router.post("/tenants/{tenant_id}/templates/reset")
async def reset_template(request: Request, tenant_id: str, ctx: Editor) -> HTMLResponse:
    """Delete the clinic's own template: the built-in one applies again."""
    _, choice = await _posted(request, ctx, tenant_id)
    try:
        with db_of(request).write() as session:
            clinic_templates.delete_template(
                session, ctx, choice["kind"], choice["channel"], choice["language"]
            )
    except ClinicBridgeError as exc:
        data = _with_preview(_editor_data(request, ctx, choice, None))
        data["editor_error"] = exc.detail
        return _editor(request, data, status=exc.status)
    data = _with_preview(_editor_data(request, ctx, choice, None))
    data["reset"] = True
    return _editor(request, data)


@router.post("/tenants/{tenant_id}/templates/test")
async def send_test_message(request: Request, tenant_id: str, ctx: Editor) -> HTMLResponse:
    """The saved (or built-in) e-mail template with sample data, to a typed-in address."""
    form, choice = await _posted(request, ctx, tenant_id)
    to_address = str(form.get("to_address", ""))[:320]
    try:
        with db_of(request).write() as session:
            message = test_send.send_test(
                session, ctx, kind=choice["kind"], channel=choice["channel"],
                language=choice["language"], to_address=to_address,
            )  # fmt: skip
            sent = {"id": message.id, "to": mask_address(message.to_address)}
    except InvalidInputError as exc:
        data = _with_preview(_editor_data(request, ctx, choice, None))
        data["test_errors"] = {e.field: e.message for e in exc.errors}
        data["typed_to"] = to_address
        return _editor(request, data, TEST, 422)
    data = _with_preview(_editor_data(request, ctx, choice, None))
    data["test_sent"] = sent
    return _editor(request, data, TEST)
