"""The voice receptionist's payment tools: the caller's balance, and a secure payment
link sent by SMS or e-mail. Card numbers are never taken over the phone: the tools
ask for none, and arguments that look like one are refused without being repeated.

Both tools need a verified caller (see ``tools.py``); an unverified one hears that
they must verify first and nothing else (not whether a record or a balance exists).
The balance read is audited as a PHI access (purpose ``voice``). A link is for the
caller's whole open balance, or for an invoice they name, or for a booking held for
its payment; it goes by ``payments.links`` (payment committed with its send job,
Checkout Session made and message queued after the call's transaction commits).

These tools work on ClinicBridge's own billing: behind another practice backend
they answer "not available".
"""

from __future__ import annotations

import re
from decimal import Decimal

from babel.numbers import format_decimal, get_currency_name, get_currency_precision

from clinicbridge.payments import ledger, links, stripe_api
from clinicbridge.payments.errors import PaymentStateError
from clinicbridge.payments.models import Invoice, Payment
from clinicbridge.voice.backend import NativeBackend, PatientInfo
from clinicbridge.voice.toolkit import Args, Outcome, ToolEnv, ToolError
from clinicbridge.voice.understanding import patient_booking, verified_patient

PURPOSE = "voice_balance"
_CARD_LIKE = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
# Argument names (normalized: lower case, letters and digits) that carry card details.
_CARD_KEYS = frozenset(
    {"pan", "cvc", "cvv", "cvv2", "cid", "securitycode", "expiry", "expirydate", "expiration"}
)
NO_CARDS = "You pay by card on that secure page; I never take card numbers over the phone."
_SPOKEN_CHANNEL = {"sms": "text message", "email": "e-mail"}
_CHANNEL_WORDS = {
    "sms": "sms",
    "text": "sms",
    "textmessage": "sms",
    "phone": "sms",
    "mobile": "sms",
    "email": "email",
    "mail": "email",
}


def _native(env: ToolEnv, permission: str) -> NativeBackend:
    backend = env.backend
    if not isinstance(backend, NativeBackend):
        raise ToolError(
            "not_available",
            "I am sorry, payments are not available for this clinic by phone yet. "
            "A member of the clinic team can help you with that.",
        )
    if not backend.ctx.has(permission):
        raise ToolError(
            "not_allowed", "I am sorry, I cannot do that by phone. The clinic team can help you."
        )
    return backend


def _verified(env: ToolEnv, args: Args, what: str) -> PatientInfo:
    try:
        return verified_patient(env, args)
    except ToolError as exc:
        if exc.code != "verification_required":
            raise
        raise ToolError(
            "verification_required",
            f"Before I can {what}, I need to confirm who you are. Please tell me your first "
            "and last name and your date of birth.",
            needs=["first_name", "last_name", "date_of_birth"],
        ) from None


def spoken_money(amount: int, currency: str) -> str:
    """``9000, "cad"`` → ``90.00 Canadian dollars`` (for a voice, not a screen)."""
    code = currency.upper()
    digits = get_currency_precision(code)
    value = Decimal(abs(amount)).scaleb(-digits)
    pattern = "#,##0" + ("." + "0" * digits if digits else "")
    name = get_currency_name(code, count=2 if value != 1 else 1, locale="en")
    return f"{format_decimal(value, format=pattern, locale='en')} {name}"


def get_patient_balance(env: ToolEnv, args: Args) -> Outcome:
    backend = _native(env, "billing:read")
    patient = _verified(env, args, "share your balance")
    owed, currency = ledger.patient_balance(
        backend.session, backend.ctx, patient.id, purpose=PURPOSE
    )
    env.touch(patient.id)
    if owed > 0:
        text = (
            f"Your balance is {spoken_money(owed, currency)}. "
            "Would you like me to send you a secure link to pay it?"
        )
    elif owed < 0:
        text = f"You have a credit of {spoken_money(owed, currency)} with the clinic."
    else:
        text = "You have no balance owing. Your account is fully paid."
    return Outcome(
        text,
        {"patient_id": patient.id, "balance": owed, "currency": currency, "owing": owed > 0},
    )


def _card_number_given(args: Args) -> bool:
    for key, value in args.raw.items():
        if key.startswith("card") or key in _CARD_KEYS:
            return True
        if isinstance(value, str | int) and _CARD_LIKE.search(str(value)):
            return True
    return False


def _wanted_channel(args: Args) -> str | None:
    said = args.text("channel", "send_by", "method", "via", "delivery", max_length=40)
    if said is None:
        return None
    key = re.sub(r"[^a-z]", "", said.lower())
    if key not in _CHANNEL_WORDS:
        raise ToolError(
            "channel_unknown", "I can send the link by text message or by e-mail. Which one?"
        )
    return _CHANNEL_WORDS[key]


def _where(route: links.Route) -> str:
    """Enough for the caller to recognise, too little to learn anything new."""
    if route.channel == "sms":
        return f"the mobile number ending in {' '.join(route.address[-4:])}"
    domain = route.address.rpartition("@")[2]
    return f"your e-mail address at {domain}"


def _masked(route: links.Route) -> str:
    if route.channel == "sms":
        return f"***{route.address[-4:]}"
    local, _, domain = route.address.rpartition("@")
    return f"{local[:1]}***@{domain}"


def _payment(env: ToolEnv, backend: NativeBackend, args: Args, patient: PatientInfo) -> Payment:
    session, ctx = backend.session, backend.ctx
    invoice_ref = args.text("invoice_number", "invoice", "invoice_id", max_length=64)
    if invoice_ref is not None:
        if invoice_ref.startswith("inv_"):
            invoice = session.get(Invoice, invoice_ref)
            if invoice is not None and invoice.patient_id != patient.id:
                invoice = None
        else:
            invoice = links.open_invoice_of(session, ctx, patient.id, invoice_ref)
        if invoice is None or invoice.tenant_id != ctx.tenant_id:
            raise ToolError("invoice_not_found", "I could not find that invoice on your account.")
        return links.invoice_payment(
            session,
            ctx,
            invoice.id,
            method="link",
            expires_at=ctx.now + links.LINK_LIFETIME,
            reuse=True,
        )
    if args.text("confirmation_code", "code", "booking_code", "booking_id") is not None:
        booking = patient_booking(env, args, patient)
        return links.booking_payment(session, ctx, booking.id)
    try:
        return links.balance_payment(session, ctx, patient.id)
    except PaymentStateError:
        raise ToolError(
            "nothing_owed", "You have no balance owing, so there is nothing to pay."
        ) from None


def process_payment(env: ToolEnv, args: Args) -> Outcome:
    backend = _native(env, "billing:write")
    if _card_number_given(args):
        raise ToolError(
            "card_details_refused",
            "For your security I cannot take card details over the phone. I can send you "
            "a secure payment link by text message or e-mail instead.",
        )
    patient = _verified(env, args, "send you a payment link")
    env.touch(patient.id)
    session, ctx = backend.session, backend.ctx
    if stripe_api.stripe_integration(session, ctx.tenant_id) is None:
        raise ToolError(
            "not_available",
            "I am sorry, this clinic does not take payments by link yet. "
            "A member of the clinic team can help you with that.",
        )
    wanted = _wanted_channel(args)
    available = links.routes(session, ctx.tenant_id, patient.id)
    if not available:
        raise ToolError(
            "no_contact",
            "I am sorry, I have no mobile number or e-mail address on file that I can send "
            "a payment link to. The clinic team can help you.",
        )
    route = next((r for r in available if wanted in (None, r.channel)), None)
    if route is None:
        other = _SPOKEN_CHANNEL[available[0].channel]
        raise ToolError(
            "channel_unavailable",
            f"I am sorry, I cannot send it by {_SPOKEN_CHANNEL[str(wanted)]}. "
            f"I can send it by {other} instead. Would that work?",
            channels=[r.channel for r in available],
        )
    payment = _payment(env, backend, args, patient)
    links.send_later(session, ctx, payment, route.channel)
    amount = spoken_money(payment.amount, payment.currency)
    return Outcome(
        f"I am sending you a secure payment link for {amount} by "
        f"{_SPOKEN_CHANNEL[route.channel]} to {_where(route)}; it should arrive in a moment. "
        + NO_CARDS,
        {
            "patient_id": patient.id,
            "payment_id": payment.id,
            "amount": payment.amount,
            "currency": payment.currency,
            "channel": route.channel,
            "to": _masked(route),
            "invoice_id": payment.invoice_id,
            "booking_id": payment.booking_id,
        },
    )
