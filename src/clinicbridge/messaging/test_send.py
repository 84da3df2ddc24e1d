"""A test message: the clinic's current template (its own, or the built-in one) rendered
with sample data and sent to an address staff type in, through the clinic's own
integration, exactly as a real message would go (one row, one ``messaging.send`` job)."""

from __future__ import annotations

from pydantic import EmailStr, TypeAdapter, ValidationError
from sqlalchemy.orm import Session

from clinicbridge.audit.service import record
from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import InvalidInputError
from clinicbridge.core.ids import new_id
from clinicbridge.core.models import Tenant
from clinicbridge.jobs import queue
from clinicbridge.messaging.clinic_templates import resolve_template, sample_variables
from clinicbridge.messaging.kinds import KIND_VARIABLES
from clinicbridge.messaging.languages import normalize_tag
from clinicbridge.messaging.models import Message
from clinicbridge.messaging.service import SEND_KIND, add_event, integration_for
from clinicbridge.messaging.templates import TemplateRenderError

TEST_CHANNELS = ("email",)
_EMAIL: TypeAdapter[str] = TypeAdapter(EmailStr)


def _address(to_address: str) -> str:
    try:
        return _EMAIL.validate_python(to_address.strip())
    except ValidationError:
        raise InvalidInputError.one("to_address", "must be an e-mail address") from None


def send_test(
    session: Session,
    ctx: Ctx,
    *,
    kind: str,
    channel: str = "email",
    language: str,
    to_address: str,
) -> Message:
    """Queue the template of ``kind`` on ``channel`` in ``language`` (along the language
    chain), rendered with sample data, to ``to_address``. Bad input, no template or no
    integration: InvalidInputError naming the field."""
    if channel not in TEST_CHANNELS:
        raise InvalidInputError.one("channel", "test messages can only be sent by e-mail")
    if kind not in KIND_VARIABLES:  # custom kinds have no sample data
        raise InvalidInputError.one("kind", f"must be one of {', '.join(KIND_VARIABLES)}")
    tag = normalize_tag(language)
    if tag is None:
        raise InvalidInputError.one("language", "must be a BCP 47 tag such as en, fr or fr-CA")
    address = _address(to_address)
    integration = integration_for(session, ctx.tenant_id, channel)
    if integration is None:
        raise InvalidInputError.one(
            "channel", f"the clinic has no enabled integration that sends {channel}", "no_provider"
        )
    tenant = session.get(Tenant, ctx.tenant_id)
    assert tenant is not None
    found = resolve_template(session, ctx.tenant_id, kind, channel, tag, tenant.default_language)
    if found is None:
        raise InvalidInputError.one("kind", f"no template for {kind} on {channel}")
    used_language, compiled = found.language, found.template
    try:
        rendered = compiled.render(sample_variables(kind, used_language))
    except TemplateRenderError as exc:
        raise InvalidInputError.one("variables", exc.detail) from None
    message = Message(
        id=new_id("msg"),
        tenant_id=ctx.tenant_id,
        patient_id=None,
        booking_id=None,
        channel=channel,
        integration_id=integration.id,
        provider=integration.connector,
        kind=kind,
        language=used_language,
        to_address=address,
        subject=rendered.subject,
        body=rendered.text,
        html=rendered.html,
        attachments=None,
        status="queued",
        dedupe_key=None,
        created_by=f"{ctx.actor_type}:{ctx.actor_id}",
        created_at=ctx.now,
        updated_at=ctx.now,
    )
    session.add(message)
    session.flush()
    add_event(session, message, "queued", source="api", at=ctx, detail="test message")
    record(session, ctx, "message.test", "message", message.id,
           diff={"channel": channel, "kind": kind, "language": used_language})  # fmt: skip
    queue.enqueue(
        session,
        SEND_KIND,
        {"message_id": message.id},
        now=ctx.now,
        tenant_id=ctx.tenant_id,
        dedupe_key=f"{SEND_KIND}:{message.id}",
    )
    return message
