"""A clinic's own templates: saved only once they validate, resolved over the built-ins,
previewed with sample data (and, for SMS, the length and segments it will cost)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from clinicbridge.audit.service import record
from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import InvalidInputError, NotFoundError
from clinicbridge.core.ids import new_id
from clinicbridge.core.tenancy import scoped_select
from clinicbridge.messaging.defaults import DEFAULT_TEMPLATES, DefaultTemplate
from clinicbridge.messaging.kinds import KINDS, variables_for
from clinicbridge.messaging.languages import normalize_tag, resolve
from clinicbridge.messaging.models import ClinicTemplate
from clinicbridge.messaging.segments import sms_segments
from clinicbridge.messaging.templates import (
    MessageTemplate,
    RenderedMessage,
    TemplateRenderError,
    load_template,
    validate_template,
)
from clinicbridge.messaging.variables import booking_variables, payment_variables


def _language(tag: str) -> str:
    normalized = normalize_tag(tag)
    if normalized is None:
        raise InvalidInputError.one("language", "must be a BCP 47 tag such as en, fr or fr-CA")
    return normalized


def _kind(kind: str) -> str:
    if kind not in KINDS:
        raise InvalidInputError.one("kind", f"must be one of {', '.join(KINDS)}")
    return kind


@dataclass(frozen=True)
class Resolved:
    """A template found along the language chain, compiled, with the provider-approved
    template it maps to, if any (WhatsApp: a Twilio Content SID and its variables)."""

    language: str
    template: MessageTemplate
    content_sid: str | None = None
    content_variables: tuple[str, ...] = ()

    def provider_template(self, values: Mapping[str, Any]) -> dict[str, Any] | None:
        """``{"content_sid", "content_variables": {"1": ..., "2": ...}}`` for these values."""
        if self.content_sid is None:
            return None
        filled = {str(i): _lookup(values, name) for i, name in enumerate(self.content_variables, 1)}
        return {"content_sid": self.content_sid, "content_variables": filled}


def _lookup(values: Mapping[str, Any], name: str) -> str:
    head, _, tail = name.partition(".")
    value: Any = values.get(head)
    if tail:
        value = value.get(tail) if isinstance(value, Mapping) else None
    return "" if value is None else str(value)


def _check_content(
    kind: str,
    channel: str,
    content_sid: str | None,
    content_variables: Sequence[str] | None,
    declared: list[str] | None,
) -> list[str] | None:
    """Content templates are WhatsApp's; each variable must be one the kind provides."""
    if content_sid is None:
        if content_variables:
            raise InvalidInputError.one("content_variables", "only with a content_sid")
        return None
    if channel != "whatsapp":
        raise InvalidInputError.one("content_sid", "only WhatsApp templates have a content SID")
    spec = variables_for(kind, declared)
    names = list(content_variables or [])
    for i, name in enumerate(names):
        head, _, tail = name.partition(".")
        fields = spec.get(head, ()) if head in spec else None
        known = head in spec and (fields is None if not tail else tail in (fields or ()))
        if not known:
            raise InvalidInputError.one(
                f"content_variables.{i}", f"'{name}' is not a variable of {kind}", "unknown"
            )
    return names


def list_templates(session: Session, ctx: Ctx) -> list[ClinicTemplate]:
    stmt = scoped_select(ClinicTemplate, ctx.tenant_id).order_by(
        ClinicTemplate.kind, ClinicTemplate.channel, ClinicTemplate.language
    )
    return list(session.scalars(stmt))


def save_template(
    session: Session,
    ctx: Ctx,
    *,
    kind: str,
    channel: str,
    language: str,
    subject: str | None,
    body: str,
    html: str | None,
    variables: Iterable[str] | None = None,
    content_sid: str | None = None,
    content_variables: Sequence[str] | None = None,
) -> ClinicTemplate:
    """Create or replace; a template that does not validate is refused (422 by field).
    A WhatsApp template may name its approved Content SID and, in order, the variables
    that fill the approved text's {{1}}, {{2}}...; ``body`` stays our copy of it."""
    kind, language = _kind(kind), _language(language)
    declared = sorted(variables) if variables is not None else None
    validate_template(kind, channel, subject, body, html, variables=declared)
    names = _check_content(kind, channel, content_sid, content_variables, declared)
    row = session.scalars(
        scoped_select(ClinicTemplate, ctx.tenant_id).where(
            ClinicTemplate.kind == kind,
            ClinicTemplate.channel == channel,
            ClinicTemplate.language == language,
        )
    ).first()
    action = "message_template.update"
    if row is None:
        action = "message_template.create"
        row = ClinicTemplate(
            id=new_id("mtp"),
            tenant_id=ctx.tenant_id,
            kind=kind,
            channel=channel,
            language=language,
            created_at=ctx.now,
        )
        session.add(row)
    row.subject, row.body, row.html, row.variables = subject, body, html, declared
    row.content_sid, row.content_variables = content_sid, names
    row.updated_by, row.updated_at = f"{ctx.actor_type}:{ctx.actor_id}", ctx.now
    session.flush()
    record(session, ctx, action, "message_template", row.id,
           diff={"kind": kind, "channel": channel, "language": language})  # fmt: skip
    return row


def delete_template(session: Session, ctx: Ctx, kind: str, channel: str, language: str) -> None:
    """Back to the built-in template."""
    result = session.execute(
        sa.delete(ClinicTemplate).where(
            ClinicTemplate.tenant_id == ctx.tenant_id,
            ClinicTemplate.kind == kind,
            ClinicTemplate.channel == channel,
            ClinicTemplate.language == _language(language),
        )
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        raise NotFoundError("The clinic has no own template for this kind, channel and language.")
    record(session, ctx, "message_template.delete", "message_template", None,
           diff={"kind": kind, "channel": channel, "language": language})  # fmt: skip


def resolve_template(
    session: Session,
    tenant_id: str,
    kind: str,
    channel: str,
    language: str | None,
    clinic_default: str | None,
) -> Resolved | None:
    """The clinic's or the built-in template along the language chain (the clinic's wins
    at each step), compiled; None when neither exists."""
    own: dict[tuple[str, str, str], ClinicTemplate | DefaultTemplate] = {
        (row.kind, row.channel, row.language): row
        for row in session.scalars(
            scoped_select(ClinicTemplate, tenant_id).where(
                ClinicTemplate.kind == kind, ClinicTemplate.channel == channel
            )
        )
    }
    found = resolve({**DEFAULT_TEMPLATES, **own}, kind, channel, language, clinic_default)
    if found is None:
        return None
    lang, t = found
    declared = getattr(t, "variables", None)
    compiled = load_template(kind, channel, t.subject, t.body, t.html, variables=declared)
    if not isinstance(t, ClinicTemplate) or t.content_sid is None:
        return Resolved(lang, compiled)
    return Resolved(lang, compiled, t.content_sid, tuple(t.content_variables or ()))


def sample_variables(kind: str, language: str) -> dict[str, Any]:
    """Made-up values to preview a template with."""
    start = datetime(2026, 3, 10, 14, 30, tzinfo=UTC)
    if kind == "payment.receipt":
        return payment_variables(
            language=language, clinic_default_language="en", clinic_name="Maple Family Clinic",
            clinic_phone="+1 416 555 0100", patient_first_name="Alex", amount_minor=12550,
            currency="CAD", receipt_url="https://clinic.example/r/sample",
        )  # fmt: skip
    return booking_variables(
        language=language, clinic_default_language="en", timezone="America/Toronto",
        clinic_name="Maple Family Clinic", clinic_phone="+1 416 555 0100",
        patient_first_name="Alex", start=start, service="Check-up", provider="Dr. Sample",
        location="Main Street", confirmation_code="K7Q-4MX",
        confirm_url="https://clinic.example/b/sample-confirm",
        cancel_url="https://clinic.example/b/sample-cancel",
        previous_start=start.replace(day=9),
    )  # fmt: skip


def preview(
    kind: str,
    channel: str,
    language: str,
    subject: str | None,
    body: str,
    html: str | None,
    variables: dict[str, Any] | None = None,
    content_sid: str | None = None,
    content_variables: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Validate and render with sample data (or the given variables); for SMS and
    WhatsApp also the encoding, length and segment count, and for an approved WhatsApp
    template the values its placeholders would get."""
    kind, language = _kind(kind), _language(language)
    template = validate_template(kind, channel, subject, body, html)
    names = _check_content(kind, channel, content_sid, content_variables, None)
    values = variables if variables is not None else sample_variables(kind, language)
    try:
        rendered: RenderedMessage = template.render(values)
    except TemplateRenderError as exc:
        raise InvalidInputError.one("variables", exc.detail) from None
    out: dict[str, Any] = {
        "subject": rendered.subject,
        "text": rendered.text,
        "html": rendered.html,
    }
    if channel in ("sms", "whatsapp"):
        encoding, units, segments = sms_segments(rendered.text)
        out["sms"] = {"encoding": encoding, "length": units, "segments": segments}
    if content_sid is not None:
        resolved = Resolved(language, template, content_sid, tuple(names or ()))
        out["provider_template"] = resolved.provider_template(values)
    return out
