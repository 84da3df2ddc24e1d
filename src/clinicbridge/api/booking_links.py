"""``/b/{token}``: confirm or cancel a booking from a link in a patient's message.

No API key and no sign-in: the signed token (see scheduling/links.py) is the
credential and names one booking and one action. ``GET`` only shows a small page
saying what the link will do, with one button; it never changes anything, because
mail scanners and link previews fetch links on their own. ``POST`` does it, as the
clinic's ``system`` principal ``patient_link``, and shows the result.

The pages show only what the message already told the patient: the time (in the
clinic's timezone), the service and the clinic, never the patient's name. Doing the
same thing twice is answered kindly; a cancellation inside the service's window asks
the patient to call the clinic. An unknown or altered token is a bare 404 page, an
expired one a bare 410. POSTs are limited per client IP (429 with ``Retry-After``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from clinicbridge.api.deps import DB, clock_of
from clinicbridge.core.context import Ctx
from clinicbridge.core.models import Tenant
from clinicbridge.db.engine import Database
from clinicbridge.messaging.models import Message
from clinicbridge.messaging.service import add_event
from clinicbridge.messaging.status import RANK
from clinicbridge.scheduling import bookings, links
from clinicbridge.scheduling.bookings import BookingStateError, CancellationWindowError
from clinicbridge.scheduling.models import Booking, Location, Service
from clinicbridge.scheduling.public import WindowLimiter, client_key

router = APIRouter(tags=["public"])

ACTOR_ID = "patient_link"
ROLE = "patient_link"
PERMISSIONS = frozenset({"bookings:write"})
CANCEL_REASON = "cancelled by the patient from a message link"
POST_LIMIT = (20, 600.0)  # requests, seconds: per client IP

HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",  # the token is in the URL
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
}


@dataclass(frozen=True)
class Facts:
    """What a page may say about a booking (nothing about the patient)."""

    tenant_id: str
    status: str
    starts_at: datetime
    when: str
    service: str
    clinic: str
    phone: str | None
    window_minutes: int


# --- the key and the limiter ------------------------------------------------------------


def _key_of(request: Request) -> bytes:
    state = request.app.state
    key: bytes | None = getattr(state, "booking_link_key", None)
    if key is None:
        key = links.link_key(state.settings)
        state.booking_link_key = key
    return key


def _limiter_of(request: Request) -> WindowLimiter:
    state = request.app.state
    limiter: WindowLimiter | None = getattr(state, "booking_link_limiter", None)
    if limiter is None:
        limiter = WindowLimiter(*POST_LIMIT)
        state.booking_link_limiter = limiter
    return limiter


def _ip(request: Request) -> str | None:
    return request.client.host if request.client else None


# --- routes -----------------------------------------------------------------------------


@router.get(
    "/b/{token}",
    response_class=HTMLResponse,
    summary="What a booking link will do (changes nothing)",
)
def show_link(token: str, request: Request, db: DB) -> HTMLResponse:
    now = clock_of(request).now()
    try:
        ref = links.read_token(_key_of(request), token, now)
    except links.ExpiredLinkTokenError:
        return _expired()
    except links.LinkTokenError:
        return _not_found()
    with db.read() as session:
        facts = _facts(session, _booking_of(session, ref))
    if facts is None:
        return _not_found()
    if ref.action == "confirm":
        return _confirm_question(facts)
    return _cancel_question(facts, now)


@router.post(
    "/b/{token}",
    response_class=HTMLResponse,
    summary="Confirm or cancel a booking from a message link",
)
def use_link(token: str, request: Request, db: DB) -> HTMLResponse:
    now = clock_of(request).now()
    wait = _limiter_of(request).hit(client_key(_ip(request)), now.timestamp())
    if wait is not None:
        return _too_many(wait)
    try:
        ref = links.read_token(_key_of(request), token, now)
    except links.ExpiredLinkTokenError:
        return _expired()
    except links.LinkTokenError:
        return _not_found()
    request_id = getattr(request.state, "request_id", None)
    outcome, facts = _act(db, ref, now, request_id, _ip(request))
    if facts is None:
        return _not_found()
    return _result(outcome, ref.action, facts)


def link_ctx(tenant_id: str, now: datetime, request_id: str | None, ip: str | None) -> Ctx:
    return Ctx.system(
        tenant_id, ACTOR_ID, now, role=ROLE, permissions=PERMISSIONS, request_id=request_id, ip=ip
    )


def _booking_of(session: Session, ref: links.LinkRef) -> str | None:
    """The booking a link acts on: named by the token, or the carrying message's."""
    if ref.message_id is None:
        return ref.booking_id
    message = session.get(Message, ref.message_id)
    return message.booking_id if message is not None else None


def _clicked(session: Session, ref: links.LinkRef, now: datetime) -> None:
    """A used link is a click on the message that carried it (its timeline says which)."""
    message = session.get(Message, ref.message_id) if ref.message_id else None
    if message is None:
        return
    add_event(session, message, "clicked", source="link", at=now,
              detail=f"{ref.action} link used")  # fmt: skip
    if RANK["clicked"] > RANK.get(message.status, 0):
        message.status, message.updated_at = "clicked", now


def _act(
    db: Database,
    ref: links.LinkRef,
    now: datetime,
    request_id: str | None,
    ip: str | None,
) -> tuple[str, Facts | None]:
    """Do the link's action; ``(outcome, facts)``, facts None if there is no booking."""
    facts: Facts | None = None
    action = ref.action
    try:
        with db.write() as session:
            booking_id = _booking_of(session, ref)
            facts = _facts(session, booking_id)
            if facts is None or booking_id is None:
                return "missing", None
            _clicked(session, ref, now)
            ctx = link_ctx(facts.tenant_id, now, request_id, ip)
            if action == "confirm":
                if facts.status == "confirmed":
                    return "already", facts
                bookings.confirm_booking(session, ctx, booking_id)
            else:
                if facts.status == "cancelled":
                    return "already", facts
                bookings.cancel_booking(session, ctx, booking_id, reason=CANCEL_REASON)
            return "done", facts
    except CancellationWindowError:
        return "window", facts
    except BookingStateError:
        pass
    # Not possible in its state, perhaps because a twin request just did it.
    with db.read() as session:
        facts = _facts(session, _booking_of(session, ref))
    if facts is None:
        return "missing", None
    target = "confirmed" if action == "confirm" else "cancelled"
    return ("already" if facts.status == target else "state"), facts


def _facts(session: Session, booking_id: str | None) -> Facts | None:
    booking = session.get(Booking, booking_id) if booking_id else None
    if booking is None:
        return None
    tenant = session.get(Tenant, booking.tenant_id)
    service = session.get(Service, booking.service_id)
    location = session.get(Location, booking.location_id) if booking.location_id else None
    assert tenant is not None and service is not None
    return Facts(
        tenant_id=booking.tenant_id,
        status=booking.status,
        starts_at=booking.starts_at,
        when=when_text(booking.starts_at, tenant.timezone),
        service=service.name,
        clinic=tenant.name,
        phone=(location.phone if location is not None else None) or None,
        window_minutes=service.cancellation_window_minutes or 0,
    )


def when_text(start: datetime, timezone: str) -> str:
    """``Friday 6 March 2026 at 09:00 EST`` in the clinic's timezone."""
    local = start.astimezone(ZoneInfo(timezone))
    return (
        f"{local.strftime('%A')} {local.day} {local.strftime('%B %Y')} "
        f"at {local.strftime('%H:%M')} {local.tzname() or ''}"
    ).rstrip()


# --- pages ------------------------------------------------------------------------------


def _appointment(f: Facts) -> str:
    return (
        f"<strong>{escape(f.when)}</strong> for <strong>{escape(f.service)}</strong> "
        f"at <strong>{escape(f.clinic)}</strong>"
    )


def _call(f: Facts) -> str:
    if f.phone:
        phone = escape(f.phone)
        tel = escape("".join(c for c in f.phone if c.isdigit() or c == "+"))
        return f'Please call {escape(f.clinic)} at <a href="tel:{tel}">{phone}</a>.'
    return f"Please call {escape(f.clinic)}."


def _form(label: str) -> str:
    # No action attribute: the form posts back to this very address (and token).
    return f'<form method="post"><button type="submit">{escape(label)}</button></form>'


def _confirm_question(f: Facts) -> HTMLResponse:
    if f.status == "confirmed":
        return _page(
            "Appointment confirmed", [f"Your appointment on {_appointment(f)} is confirmed."]
        )
    if f.status not in ("held", "booked"):
        return _state_page(f)
    return _page(
        "Confirm your appointment",
        [f"Confirm your appointment on {_appointment(f)}?"],
        _form("Yes, confirm my appointment"),
    )


def _cancel_question(f: Facts, now: datetime) -> HTMLResponse:
    if f.status == "cancelled":
        return _already_cancelled(f)
    if f.status not in ("held", "booked", "confirmed") or f.starts_at <= now:
        return _state_page(f)
    if f.window_minutes and f.starts_at - now < timedelta(minutes=f.window_minutes):
        return _window_page(f)
    return _page(
        "Cancel your appointment",
        [
            f"Cancel your appointment on {_appointment(f)}?",
            "If you want to keep it, you can simply close this page.",
        ],
        _form("Yes, cancel my appointment"),
    )


def _result(outcome: str, action: str, f: Facts) -> HTMLResponse:
    if outcome == "window":
        return _window_page(f)
    if outcome == "state":
        return _state_page(f)
    if action == "confirm":
        return _page(
            "Appointment confirmed",
            [f"Thank you. Your appointment on {_appointment(f)} is confirmed."],
        )
    if outcome == "already":
        return _already_cancelled(f)
    return _page(
        "Appointment cancelled",
        [f"Your appointment on {_appointment(f)} is cancelled.", "Thank you for letting us know."],
    )


def _already_cancelled(f: Facts) -> HTMLResponse:
    return _page(
        "Appointment cancelled",
        [f"Your appointment on {_appointment(f)} is already cancelled. Nothing more to do."],
    )


def _window_page(f: Facts) -> HTMLResponse:
    return _page(
        "Please call the clinic",
        [
            f"Your appointment on {_appointment(f)} is too soon to cancel online.",
            _call(f),
        ],
        status=409,
    )


def _state_page(f: Facts) -> HTMLResponse:
    lead = {
        "cancelled": "This appointment was cancelled, so it cannot be confirmed.",
        "completed": "This appointment has already taken place.",
        "no_show": "This appointment has already passed.",
    }.get(f.status, "This appointment can no longer be changed online.")
    return _page("This link can no longer be used", [lead, _call(f)], status=409)


def _not_found() -> HTMLResponse:
    return _page("Link not valid", ["This link is not valid."], status=404)


def _expired() -> HTMLResponse:
    return _page("Link expired", ["This link has expired."], status=410)


def _too_many(wait: float) -> HTMLResponse:
    response = _page(
        "Too many attempts", ["Too many attempts. Please try again in a few minutes."], status=429
    )
    response.headers["Retry-After"] = str(math.ceil(wait))
    return response


_STYLE = """
*{box-sizing:border-box}
body{margin:0;font:1.125rem/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
color:#1a1a1a;background:#f4f5f7}
main{max-width:32rem;margin:3rem auto;padding:2rem 1.5rem;background:#fff;
border-radius:.5rem;box-shadow:0 1px 3px rgba(0,0,0,.15)}
h1{font-size:1.5rem;line-height:1.25;margin:0 0 1rem}
p{margin:0 0 1rem}
a{color:#0b57d0}
button{font:inherit;font-weight:600;min-height:2.75rem;padding:.625rem 1.25rem;border:0;
border-radius:.375rem;background:#0b57d0;color:#fff;cursor:pointer}
button:hover{background:#0842a0}
button:focus-visible,a:focus-visible{outline:3px solid #1a1a1a;outline-offset:2px}
@media (prefers-color-scheme:dark){body{background:#121212;color:#eee}
main{background:#1e1e1e;box-shadow:none}a{color:#8ab4f8}}
"""


def _page(title: str, paragraphs: list[str], form: str = "", *, status: int = 200) -> HTMLResponse:
    """A page; ``paragraphs`` and ``form`` are HTML, already escaped."""
    body = "".join(f"<p>{p}</p>" for p in paragraphs)
    html = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        '<meta name="robots" content="noindex,nofollow">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main><h1>{escape(title)}</h1>{body}{form}</main></body></html>"
    )
    return HTMLResponse(html, status_code=status, headers=HEADERS)
