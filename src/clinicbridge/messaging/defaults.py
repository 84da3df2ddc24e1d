"""Built-in templates, English and (Canadian) French, for every kind and channel.

Only the patient's first name, the time, the service and the clinic's name and phone
appear (no provider, no location: they can reveal more than a patient would want on a
lock screen). SMS texts use the GSM-7 alphabet only, in French too (no ç, ê, â, î, ô,
û), so they cost 160-character segments instead of 70. WhatsApp uses the SMS text.
E-mail has a written plain-text part, not the HTML with its tags stripped.

``DEFAULT_TEMPLATES`` is keyed by ``(kind, channel, language)``, as
:func:`clinicbridge.messaging.languages.resolve` expects.
"""

from __future__ import annotations

from dataclasses import dataclass

from clinicbridge.core.errors import NotFoundError
from clinicbridge.messaging.languages import resolve
from clinicbridge.messaging.templates import MessageTemplate, load_template


@dataclass(frozen=True)
class DefaultTemplate:
    subject: str | None
    body: str
    html: str | None = None


@dataclass(frozen=True)
class _Texts:
    sms: str
    push_title: str
    push: str
    subject: str
    intro: str  # one sentence, plain text with variables; shared by text and HTML
    rows: tuple[tuple[str, str], ...]  # (label, variable expression)
    actions: tuple[tuple[str, str], ...]  # (label, url expression)


_VIDEO = {"en": "Video visit link", "fr": "Lien de la visite vidéo"}
_GREETING = {"en": "Hi {{ patient.first_name }},", "fr": "Bonjour {{ patient.first_name }},"}
_CLOSING = {"en": "See you soon,", "fr": "À bientôt,"}
_REGARDS = {"en": "Best regards,", "fr": "Cordialement,"}
_SMS_VIDEO = {
    "en": "{% if booking.video_url %} Video link: {{ booking.video_url }}{% endif %}",
    "fr": "{% if booking.video_url %} Lien vidéo : {{ booking.video_url }}{% endif %}",
}

_SERVICE = {"en": "Service", "fr": "Service"}
_WHEN = {"en": "When", "fr": "Date et heure"}
_CODE = {"en": "Confirmation code", "fr": "Code de confirmation"}


def _booking_rows(lang: str, *, previous: bool = False) -> tuple[tuple[str, str], ...]:
    rows = [(_SERVICE[lang], "booking.service"), (_WHEN[lang], "booking.start_text")]
    if previous:
        label = "Previously" if lang == "en" else "Ancienne date"
        rows.append((label, "booking.previous_start_text"))
    rows.append((_CODE[lang], "booking.confirmation_code"))
    return tuple(rows)


_TEXTS: dict[str, dict[str, _Texts]] = {
    "en": {
        "booking.confirmation": _Texts(
            sms="Hi {{ patient.first_name }}, you are booked at {{ clinic.name }} on "
            "{{ booking.start_text }} for {{ booking.service }}." + _SMS_VIDEO["en"] + " "
            "To cancel: {{ links.cancel_url }}",
            push_title="Appointment booked",
            push="{{ booking.service }} at {{ clinic.name }} on {{ booking.start_text }}",
            subject="Your appointment at {{ clinic.name }} is booked",
            intro="Your appointment at {{ clinic.name }} is booked.",
            rows=_booking_rows("en"),
            actions=(("Cancel appointment", "links.cancel_url"),),
        ),
        "booking.reminder": _Texts(
            sms="Hi {{ patient.first_name }}, a reminder of your appointment at "
            "{{ clinic.name }} on {{ booking.start_text }} for {{ booking.service }}."
            + _SMS_VIDEO["en"]
            + " "
            "Confirm: {{ links.confirm_url }} Cancel: {{ links.cancel_url }}",
            push_title="Appointment reminder",
            push="{{ booking.service }} at {{ clinic.name }} on {{ booking.start_text }}",
            subject="Reminder: your appointment on {{ booking.date_text }}",
            intro="This is a reminder of your upcoming appointment at {{ clinic.name }}. "
            "Please let us know if you are coming.",
            rows=_booking_rows("en"),
            actions=(
                ("Confirm appointment", "links.confirm_url"),
                ("Cancel appointment", "links.cancel_url"),
            ),
        ),
        "booking.cancelled": _Texts(
            sms="Hi {{ patient.first_name }}, your appointment at {{ clinic.name }} on "
            "{{ booking.start_text }} for {{ booking.service }} is cancelled. "
            "Questions? Call {{ clinic.phone }}.",
            push_title="Appointment cancelled",
            push="{{ booking.service }} at {{ clinic.name }} on {{ booking.start_text }}",
            subject="Your appointment at {{ clinic.name }} is cancelled",
            intro="Your appointment at {{ clinic.name }} is cancelled. To book again or if "
            "you have questions, call us at {{ clinic.phone }}.",
            rows=(_booking_rows("en")[0], _booking_rows("en")[1]),
            actions=(),
        ),
        "booking.rescheduled": _Texts(
            sms="Hi {{ patient.first_name }}, your appointment at {{ clinic.name }} for "
            "{{ booking.service }} is now {{ booking.start_text }} (instead of "
            "{{ booking.previous_start_text }})." + _SMS_VIDEO["en"] + " "
            "Confirm: {{ links.confirm_url }} Cancel: {{ links.cancel_url }}",
            push_title="Appointment moved",
            push="{{ booking.service }} at {{ clinic.name }}, now on {{ booking.start_text }}",
            subject="Your appointment at {{ clinic.name }} has a new time",
            intro="Your appointment at {{ clinic.name }} has moved to a new time.",
            rows=_booking_rows("en", previous=True),
            actions=(
                ("Confirm new time", "links.confirm_url"),
                ("Cancel appointment", "links.cancel_url"),
            ),
        ),
        "booking.video_link": _Texts(
            sms="Hi {{ patient.first_name }}, here is the video link for your appointment at "
            "{{ clinic.name }} on {{ booking.start_text }}: {{ booking.video_url }}",
            push_title="Your video visit link",
            push="{{ booking.service }} at {{ clinic.name }} on {{ booking.start_text }}: "
            "the link is ready",
            subject="The video link for your appointment at {{ clinic.name }}",
            intro="The link for your video visit at {{ clinic.name }} is ready.",
            rows=_booking_rows("en"),
            actions=(("Join the video visit", "booking.video_url"),),
        ),
        "payment.receipt": _Texts(
            sms="Hi {{ patient.first_name }}, thank you for your payment of "
            "{{ payment.amount_text }} to {{ clinic.name }}. Receipt: {{ payment.receipt_url }}",
            push_title="Payment received",
            push="{{ clinic.name }} received your payment of {{ payment.amount_text }}. Thank you!",
            subject="Your receipt from {{ clinic.name }}",
            intro="{{ clinic.name }} received your payment. Thank you!",
            rows=(("Amount", "payment.amount_text"),),
            actions=(("View receipt", "payment.receipt_url"),),
        ),
        "payment.link": _Texts(
            sms="Hi {{ patient.first_name }}, here is your secure link to pay "
            "{{ payment.amount_text }} to {{ clinic.name }}: {{ payment.pay_url }}",
            push_title="Your payment link",
            push="Pay {{ payment.amount_text }} to {{ clinic.name }} securely online.",
            subject="Your payment link from {{ clinic.name }}",
            intro="As you asked, here is your secure link to pay {{ clinic.name }} online. "
            "The clinic never asks for card numbers by phone or e-mail.",
            rows=(("Amount", "payment.amount_text"),),
            actions=(("Pay securely", "payment.pay_url"),),
        ),
    },
    "fr": {
        "booking.confirmation": _Texts(
            sms="Bonjour {{ patient.first_name }}, votre rendez-vous chez {{ clinic.name }} "
            "est prévu le {{ booking.start_text }} ({{ booking.service }})."
            + _SMS_VIDEO["fr"]
            + " "
            "Pour annuler : {{ links.cancel_url }}",
            push_title="Rendez-vous confirmé",
            push="{{ booking.service }} chez {{ clinic.name }} le {{ booking.start_text }}",
            subject="Votre rendez-vous chez {{ clinic.name }} est confirmé",
            intro="Votre rendez-vous chez {{ clinic.name }} est confirmé.",
            rows=_booking_rows("fr"),
            actions=(("Annuler le rendez-vous", "links.cancel_url"),),
        ),
        "booking.reminder": _Texts(
            sms="Bonjour {{ patient.first_name }}, rappel de votre rendez-vous chez "
            "{{ clinic.name }} le {{ booking.start_text }} ({{ booking.service }})."
            + _SMS_VIDEO["fr"]
            + " Pour confirmer : {{ links.confirm_url }} Pour annuler : {{ links.cancel_url }}",
            push_title="Rappel de rendez-vous",
            push="{{ booking.service }} chez {{ clinic.name }} le {{ booking.start_text }}",
            subject="Rappel : votre rendez-vous du {{ booking.date_text }}",
            intro="Petit rappel de votre prochain rendez-vous chez {{ clinic.name }}. "
            "Merci de nous confirmer votre présence.",
            rows=_booking_rows("fr"),
            actions=(
                ("Confirmer le rendez-vous", "links.confirm_url"),
                ("Annuler le rendez-vous", "links.cancel_url"),
            ),
        ),
        "booking.cancelled": _Texts(
            sms="Bonjour {{ patient.first_name }}, votre rendez-vous chez {{ clinic.name }} "
            "du {{ booking.start_text }} ({{ booking.service }}) est annulé. "
            "Des questions? Appelez-nous au {{ clinic.phone }}.",
            push_title="Rendez-vous annulé",
            push="{{ booking.service }} chez {{ clinic.name }} le {{ booking.start_text }}",
            subject="Votre rendez-vous chez {{ clinic.name }} est annulé",
            intro="Votre rendez-vous chez {{ clinic.name }} est annulé. Pour prendre un nouveau "
            "rendez-vous ou pour toute question, appelez-nous au {{ clinic.phone }}.",
            rows=(_booking_rows("fr")[0], _booking_rows("fr")[1]),
            actions=(),
        ),
        "booking.rescheduled": _Texts(
            sms="Bonjour {{ patient.first_name }}, votre rendez-vous chez {{ clinic.name }} "
            "({{ booking.service }}) est déplacé au {{ booking.start_text }} (au lieu du "
            "{{ booking.previous_start_text }})."
            + _SMS_VIDEO["fr"]
            + " Pour confirmer : {{ links.confirm_url }} Pour annuler : {{ links.cancel_url }}",
            push_title="Rendez-vous déplacé",
            push="{{ booking.service }} chez {{ clinic.name }}, "
            "maintenant le {{ booking.start_text }}",
            subject="Nouvelle heure pour votre rendez-vous chez {{ clinic.name }}",
            intro="Votre rendez-vous chez {{ clinic.name }} a été déplacé.",
            rows=_booking_rows("fr", previous=True),
            actions=(
                ("Confirmer la nouvelle heure", "links.confirm_url"),
                ("Annuler le rendez-vous", "links.cancel_url"),
            ),
        ),
        "booking.video_link": _Texts(
            sms="Bonjour {{ patient.first_name }}, voici le lien vidéo de votre rendez-vous "
            "chez {{ clinic.name }} le {{ booking.start_text }} : {{ booking.video_url }}",
            push_title="Lien de votre visite vidéo",
            push="{{ booking.service }} chez {{ clinic.name }} le {{ booking.start_text }} : "
            "le lien est prêt",
            subject="Le lien vidéo de votre rendez-vous chez {{ clinic.name }}",
            intro="Le lien de votre visite vidéo chez {{ clinic.name }} est prêt.",
            rows=_booking_rows("fr"),
            actions=(("Rejoindre la visite vidéo", "booking.video_url"),),
        ),
        "payment.receipt": _Texts(
            sms="Bonjour {{ patient.first_name }}, {{ clinic.name }} confirme votre paiement "
            "de {{ payment.amount_text }}. Merci! "
            "Preuve de paiement : {{ payment.receipt_url }}",
            push_title="Paiement reçu",
            push="{{ clinic.name }} confirme votre paiement de {{ payment.amount_text }}. Merci!",
            subject="Votre reçu de {{ clinic.name }}",
            intro="{{ clinic.name }} confirme la réception de votre paiement. Merci!",
            rows=(("Montant", "payment.amount_text"),),
            actions=(("Voir le reçu", "payment.receipt_url"),),
        ),
        "payment.link": _Texts(
            sms="Bonjour {{ patient.first_name }}, voici votre lien sécurisé pour payer "
            "{{ payment.amount_text }} à {{ clinic.name }} : {{ payment.pay_url }}",
            push_title="Votre lien de paiement",
            push="Payez {{ payment.amount_text }} à {{ clinic.name }} en ligne, en toute sécurité.",
            subject="Votre lien de paiement de {{ clinic.name }}",
            intro="Comme demandé, voici votre lien sécurisé pour payer {{ clinic.name }} en "
            "ligne. La clinique ne demande jamais de numéro de carte par téléphone ou courriel.",
            rows=(("Montant", "payment.amount_text"),),
            actions=(("Payer en toute sécurité", "payment.pay_url"),),
        ),
    },
}


_FORMAL = ("payment.receipt", "payment.link", "booking.cancelled")


def _text_email(lang: str, kind: str, t: _Texts) -> str:
    lines = [_GREETING[lang], "", t.intro, ""]
    lines += [f"{label}: {{{{ {expr} }}}}" for label, expr in t.rows]
    if kind.startswith("booking.") and kind != "booking.cancelled":
        lines += [
            "{% if booking.video_url %}",
            f"{_VIDEO[lang]}: {{{{ booking.video_url }}}}",
            "{% endif %}",
        ]
    if t.actions:
        lines.append("")
        lines += [f"{label}: {{{{ {expr} }}}}" for label, expr in t.actions]
    closing = _REGARDS if kind in _FORMAL else _CLOSING
    lines += ["", closing[lang], "{{ clinic.name }}", "{{ clinic.phone }}"]
    text = "\n".join(lines) + "\n"
    return text.replace(": {{", " : {{") if lang == "fr" else text


_CELL = 'style="padding:4px 12px 4px 0;color:#555;"'
_BUTTON = (
    'style="display:inline-block;margin:0 8px 8px 0;padding:10px 18px;'
    'background:#1f5f8b;color:#ffffff;text-decoration:none;border-radius:4px;"'
)


def _html_email(lang: str, kind: str, t: _Texts) -> str:
    rows = "".join(
        f"<tr><td {_CELL}>{label}</td><td><strong>{{{{ {expr} }}}}</strong></td></tr>\n"
        for label, expr in t.rows
    )
    if kind.startswith("booking.") and kind != "booking.cancelled":
        rows += (
            "{% if booking.video_url %}\n"
            f'<tr><td {_CELL}>{_VIDEO[lang]}</td><td><a href="{{{{ booking.video_url }}}}">'
            "{{ booking.video_url }}</a></td></tr>\n"
            "{% endif %}\n"
        )
    actions = "".join(
        f'<a href="{{{{ {expr} }}}}" {_BUTTON}>{label}</a>\n' for label, expr in t.actions
    )
    closing = _REGARDS if kind in _FORMAL else _CLOSING
    return (
        f'<!DOCTYPE html>\n<html lang="{lang}">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{t.subject}</title>\n</head>\n"
        '<body style="margin:0;padding:24px;font-family:Arial,Helvetica,sans-serif;'
        'font-size:16px;line-height:1.5;color:#222;background:#ffffff;">\n'
        f"<p>{_GREETING[lang]}</p>\n<p>{t.intro}</p>\n"
        f'<table role="presentation" style="border-collapse:collapse;margin:16px 0;">\n'
        f"{rows}</table>\n"
        + (f"<p>\n{actions}</p>\n" if actions else "")
        + f"<p>{closing[lang]}<br>\n{{{{ clinic.name }}}}<br>\n{{{{ clinic.phone }}}}</p>\n"
        "</body>\n</html>\n"
    )


def _build() -> dict[tuple[str, str, str], DefaultTemplate]:
    templates: dict[tuple[str, str, str], DefaultTemplate] = {}
    for lang, kinds in _TEXTS.items():
        for kind, t in kinds.items():
            templates[(kind, "sms", lang)] = DefaultTemplate(None, t.sms)
            templates[(kind, "whatsapp", lang)] = DefaultTemplate(None, t.sms)
            templates[(kind, "push", lang)] = DefaultTemplate(t.push_title, t.push)
            templates[(kind, "email", lang)] = DefaultTemplate(
                t.subject, _text_email(lang, kind, t), _html_email(lang, kind, t)
            )
    return templates


DEFAULT_TEMPLATES: dict[tuple[str, str, str], DefaultTemplate] = _build()
DEFAULT_LANGUAGES: tuple[str, ...] = tuple(_TEXTS)


def default_template(
    kind: str, channel: str, language: str | None, clinic_default: str | None
) -> tuple[str, MessageTemplate]:
    """The built-in template along the fallback chain, as ``(language, compiled)``."""
    found = resolve(DEFAULT_TEMPLATES, kind, channel, language, clinic_default)
    if found is None:
        raise NotFoundError(f"No built-in template for {kind} on {channel}.")
    lang, t = found
    return lang, load_template(kind, channel, t.subject, t.body, t.html)
