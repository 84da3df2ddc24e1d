"""Message templates: save-time validation, the sandbox, language fallback, defaults."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from jinja2.exceptions import SecurityError
from markupsafe import Markup

from clinicbridge.core.errors import InvalidInputError
from clinicbridge.messaging.defaults import (
    DEFAULT_LANGUAGES,
    DEFAULT_TEMPLATES,
    default_template,
)
from clinicbridge.messaging.kinds import CHANNELS, KIND_VARIABLES
from clinicbridge.messaging.languages import fallback_chain, resolve
from clinicbridge.messaging.segments import sms_segments
from clinicbridge.messaging.templates import (
    HTML_ENV,
    TEXT_ENV,
    TemplateRenderError,
    validate_template,
)
from clinicbridge.messaging.variables import (
    Variables,
    babel_locale,
    booking_variables,
    format_amount,
    payment_link_variables,
    payment_variables,
)

START = datetime(2026, 3, 3, 19, 30, tzinfo=UTC)  # 14:30 in Toronto (EST)


def _booking(language: str = "en", **overrides: str) -> Variables:
    values = booking_variables(
        language=language,
        clinic_default_language="en",
        timezone="America/Toronto",
        clinic_name="Maple Physio",
        clinic_phone="+1 514 555 0100",
        patient_first_name="Amelie",
        start=START,
        previous_start=datetime(2026, 3, 2, 14, 0, tzinfo=UTC),
        service="Physiotherapy",
        provider="Dr Zed Provider",
        location="North Wing Room 4",
        confirmation_code="K7Q2M",
        confirm_url="https://cb.example/c/abc",
        cancel_url="https://cb.example/x/abc",
        video_url="https://meet.example/j/123",
    )
    for key, value in overrides.items():
        ns, field = key.split("__")
        values[ns][field] = value
    return values


def _payment(language: str = "en") -> Variables:
    return payment_variables(
        language=language,
        clinic_default_language="en",
        clinic_name="Maple Physio",
        clinic_phone="+1 514 555 0100",
        patient_first_name="Amelie",
        amount_minor=12550,
        currency="CAD",
        receipt_url="https://cb.example/r/xyz",
    )


def _payment_link(language: str = "en") -> Variables:
    return payment_link_variables(
        language=language,
        clinic_default_language="en",
        clinic_name="Maple Physio",
        clinic_phone="+1 514 555 0100",
        patient_first_name="Amelie",
        amount_minor=12550,
        currency="CAD",
        pay_url="https://checkout.stripe.test/c/pay/cs_test_1",
    )


_VALUES = {"payment.receipt": _payment, "payment.link": _payment_link}


def _errors(exc: pytest.ExceptionInfo[InvalidInputError]) -> list[tuple[str, str]]:
    return [(e.field, e.message) for e in exc.value.errors]


# --- save-time validation --------------------------------------------------------


def test_a_valid_template_compiles_and_renders() -> None:
    t = validate_template(
        "booking.reminder", "sms", None, "Hi {{ patient.first_name }}, {{ booking.service }}", None
    )
    assert t.render(_booking()).text == "Hi Amelie, Physiotherapy"


def test_unknown_variable_is_named_with_its_field() -> None:
    with pytest.raises(InvalidInputError) as exc:
        validate_template("booking.reminder", "sms", None, "Hi {{ patient_name }}", None)
    [(field, message)] = _errors(exc)
    assert field == "body"
    assert "'patient_name'" in message and "patient.first_name" in message


def test_unknown_field_of_a_namespace_is_named() -> None:
    with pytest.raises(InvalidInputError) as exc:
        validate_template(
            "booking.confirmation",
            "email",
            "For {{ patient.last_name }}",
            "ok {{ clinic.name }}",
            "<p>{{ booking.diagnosis }}</p>",
        )
    errors = _errors(exc)
    assert [f for f, _ in errors] == ["subject", "html"]
    assert "'patient.last_name'" in errors[0][1]
    assert "'booking.diagnosis'" in errors[1][1]


def test_syntax_error_names_field_and_line() -> None:
    html = "<p>Hi</p>\n<p>{{ patient.first_name }}</p>\n<p>{% if booking.service %}</p>\n"
    with pytest.raises(InvalidInputError) as exc:
        validate_template("booking.reminder", "email", "Hi", "Hi", html)
    [(field, message)] = _errors(exc)
    assert field == "html"
    assert "line" in message and "Syntax error" in message


def test_syntax_error_line_number_is_exact() -> None:
    with pytest.raises(InvalidInputError) as exc:
        validate_template("booking.reminder", "sms", None, "a\nb\n{{ clinic.name }\n", None)
    assert "line 3" in _errors(exc)[0][1]


def test_payment_variables_are_not_booking_variables() -> None:
    with pytest.raises(InvalidInputError) as exc:
        validate_template("payment.receipt", "sms", None, "{{ booking.service }}", None)
    assert "'booking'" in _errors(exc)[0][1]
    validate_template("payment.receipt", "sms", None, "{{ payment.amount_text }}", None)


def test_previous_start_only_for_rescheduled() -> None:
    body = "{{ booking.previous_start_text }}"
    validate_template("booking.rescheduled", "sms", None, body, None)
    with pytest.raises(InvalidInputError):
        validate_template("booking.reminder", "sms", None, body, None)


@pytest.mark.parametrize(
    ("channel", "subject", "body", "html", "field", "code"),
    [
        ("email", None, "text", None, "subject", "required"),
        ("email", "Hi", "  ", None, "body", "required"),
        ("push", None, "text", None, "subject", "required"),
        ("sms", "Hi", "text", None, "subject", "not_allowed"),
        ("whatsapp", None, "text", "<p>x</p>", "html", "not_allowed"),
        ("sms", None, "x" * 10_001, None, "body", "too_long"),
    ],
)
def test_parts_per_channel(
    channel: str, subject: str | None, body: str, html: str | None, field: str, code: str
) -> None:
    with pytest.raises(InvalidInputError) as exc:
        validate_template("booking.reminder", channel, subject, body, html)
    assert [(e.field, e.code) for e in exc.value.errors] == [(field, code)]


def test_unknown_kind_and_channel() -> None:
    with pytest.raises(InvalidInputError) as exc:
        validate_template("booking.lunch", "sms", None, "x", None)
    assert exc.value.errors[0].field == "kind"
    with pytest.raises(InvalidInputError) as exc:
        validate_template("booking.reminder", "fax", None, "x", None)
    assert exc.value.errors[0].field == "channel"


def test_custom_messages_use_declared_variables() -> None:
    t = validate_template(
        "custom",
        "sms",
        None,
        "{{ clinic.name }}: {{ promo.code }} {{ note }}",
        None,
        variables=["clinic.name", "promo.code", "note"],
    )
    values = {"clinic": {"name": "Maple"}, "promo": {"code": "SPRING"}, "note": "hi"}
    assert t.render(values).text == "Maple: SPRING hi"
    with pytest.raises(InvalidInputError) as exc:
        validate_template(
            "custom", "sms", None, "{{ promo.amount }}", None, variables=["promo.code"]
        )
    assert "'promo.amount'" in _errors(exc)[0][1]
    with pytest.raises(InvalidInputError) as exc:
        validate_template("custom", "sms", None, "x", None, variables=["Bad-Name"])
    assert exc.value.errors[0].field == "variables"
    with pytest.raises(InvalidInputError):
        validate_template("booking.reminder", "sms", None, "x", None, variables=["x"])


# --- the sandbox -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("{{ ''.__class__ }}", "'__class__' is not allowed"),
        ("{{ booking.__dict__ }}", "'__dict__' is not allowed"),
        ("{{ booking['__class__'] }}", "'__class__' is not allowed"),
        ("{{ booking.service.__class__.__mro__ }}", "'__mro__' is not allowed"),
        ("{{ booking.service.upper() }}", "calls are not allowed"),
        ("{{ booking.service.format }}", "namespace.field"),
        ("{{ '{0.__class__}'.format(booking.service) }}", "calls are not allowed"),
        ("{{ range(10) }}", "calls are not allowed"),
        ("{{ cycler }}", "Unknown variable 'cycler'"),
        ("{{ booking }}", "only be used as booking.<field>"),
        ("{% set b = booking %}{{ b.service }}", "only be used as booking.<field>"),
        ("{{ 9 ** 9 ** 9 }}", "'**' operator"),
        ("{{ booking.service * 100000000 }}", "'*' operator"),
        ("{% include 'secrets.txt' %}", "'include' is not allowed"),
        ("{% import 'm.html' as m %}", "'import' is not allowed"),
        ("{% macro m() %}x{% endmacro %}", "macros are not allowed"),
        (
            "{% for c in booking.service %}{% for d in booking.service %}{% endfor %}{% endfor %}",
            "loops are not allowed",
        ),
        ("{{ booking.service|center(1000000000) }}", "filter 'center' is not allowed"),
        ("{{ booking.service|attr('__class__') }}", "filter 'attr' is not allowed"),
        ("{{ booking.service|pprint }}", "filter 'pprint' is not allowed"),
    ],
)
def test_escapes_are_refused_at_save_time(body: str, expected: str) -> None:
    started = time.perf_counter()
    with pytest.raises(InvalidInputError) as exc:
        validate_template("booking.reminder", "sms", None, body, None)
    assert time.perf_counter() - started < 1.0  # 9**9**9 is never evaluated
    messages = " | ".join(m for _, m in _errors(exc))
    assert expected in messages
    assert {f for f, _ in _errors(exc)} == {"body"}


@pytest.mark.parametrize(
    "html",
    [
        "{{ patient.first_name|safe }}",
        "{% autoescape false %}{{ patient.first_name }}{% endautoescape %}",
    ],
)
def test_html_escaping_cannot_be_turned_off(html: str) -> None:
    with pytest.raises(InvalidInputError) as exc:
        validate_template("booking.reminder", "email", "Hi", "Hi", html)
    assert exc.value.errors[0].field == "html"


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__ }}",
        "{{ x.__class__.__mro__ }}",
        "{{ x.__init__.__globals__ }}",
        "{{ '{0.__class__}'.format(x) }}",
    ],
)
def test_the_sandbox_refuses_internals_at_render_time(source: str) -> None:
    # Layer two: even a template that bypassed the save-time checks cannot get in.
    for env in (TEXT_ENV, HTML_ENV):
        with pytest.raises(SecurityError):
            env.from_string(source).render(x="a")


def test_the_sandbox_is_immutable() -> None:
    with pytest.raises(SecurityError):
        TEXT_ENV.from_string("{{ d.clear() }}").render(d={"a": "b"})


def test_deep_nesting_is_a_field_error_not_a_crash() -> None:
    body = "{{ " + "(" * 5000 + "clinic.name" + ")" * 5000 + " }}"
    with pytest.raises(InvalidInputError) as exc:
        validate_template("booking.reminder", "sms", None, body, None)
    assert exc.value.errors[0].field == "body"


def test_type_errors_at_render_are_render_errors() -> None:
    t = validate_template("booking.reminder", "sms", None, "{{ booking.service + 1 }}", None)
    with pytest.raises(TemplateRenderError, match="body: TypeError"):
        t.render(_booking())


def test_missing_and_non_string_values_fail_render_clearly() -> None:
    t = validate_template("booking.reminder", "sms", None, "{{ booking.service }}", None)
    with pytest.raises(TemplateRenderError, match="body"):
        t.render({"booking": {}})
    with pytest.raises(TemplateRenderError, match=r"booking\.service"):
        t.render({"booking": {"service": object()}})
    with pytest.raises(TemplateRenderError, match="'booking'"):
        t.render({"booking": ["x"]})


# --- escaping --------------------------------------------------------------------

HOSTILE = '<script>alert("x")</script> & Co'


def test_html_part_escapes_variables_text_parts_do_not() -> None:
    values = _booking(patient__first_name=HOSTILE, clinic__name="A & B <Clinic>")
    _, email = default_template("booking.confirmation", "email", "en", "en")
    rendered = email.render(values)
    assert rendered.html is not None
    assert "<script>" not in rendered.html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; Co" in rendered.html
    assert "A &amp; B &lt;Clinic&gt;" in rendered.html
    assert HOSTILE in rendered.text  # the plain-text alternative is not HTML
    assert rendered.subject is not None and "A & B <Clinic>" in rendered.subject
    _, sms = default_template("booking.reminder", "sms", "en", "en")
    assert HOSTILE in sms.render(values).text


def test_markup_values_are_escaped_like_any_string() -> None:
    t = validate_template("booking.reminder", "email", "s", "t", "<p>{{ patient.first_name }}</p>")
    values = _booking(patient__first_name=Markup("<b>x</b>"))  # type: ignore[arg-type]
    assert t.render(values).html == "<p>&lt;b&gt;x&lt;/b&gt;</p>"


def test_subject_is_one_line() -> None:
    t = validate_template("booking.reminder", "email", "Hi {{ patient.first_name }}", "t", None)
    rendered = t.render(_booking(patient__first_name="A\r\nBcc: evil@example.com"))
    assert rendered.subject == "Hi A Bcc: evil@example.com"


# --- language fallback -----------------------------------------------------------


def test_fallback_chain() -> None:
    assert fallback_chain("fr-CA", "es") == ["fr-ca", "fr", "es", "en"]
    assert fallback_chain("fr_CA", "fr") == ["fr-ca", "fr", "en"]
    assert fallback_chain(None, "fr-CA") == ["fr-ca", "fr", "en"]
    assert fallback_chain("not a tag!", None) == ["en"]
    assert fallback_chain("zh-Hant-TW", "en") == ["zh-hant-tw", "zh-hant", "zh", "en"]
    assert fallback_chain("en-a-bbb-x-ccc", None) == ["en-a-bbb-x-ccc", "en-a-bbb", "en"]


def test_resolve_picks_the_first_available() -> None:
    available = {
        ("booking.reminder", "sms", "en"): "en",
        ("booking.reminder", "sms", "fr"): "fr",
        ("booking.reminder", "sms", "es-MX"): "es-MX",
        ("booking.reminder", "email", "de"): "de email",
    }
    assert resolve(available, "booking.reminder", "sms", "fr-CA", "en") == ("fr", "fr")
    assert resolve(available, "booking.reminder", "sms", "es-MX", "en") == ("es-MX", "es-MX")
    assert resolve(available, "booking.reminder", "sms", "es", "en") == ("en", "en")
    assert resolve(available, "booking.reminder", "sms", "de", "es-mx") == ("es-MX", "es-MX")
    assert resolve(available, "booking.reminder", "sms", "de", "pt") == ("en", "en")
    assert resolve(available, "booking.reminder", "email", "fr", "en") is None
    assert resolve(available, "booking.reminder", "email", "de-AT", None) == ("de", "de email")


def test_clinic_templates_beat_defaults_at_the_same_language_only() -> None:
    clinic = {("booking.reminder", "sms", "en"): "clinic en"}
    merged = {**DEFAULT_TEMPLATES, **clinic}
    assert resolve(merged, "booking.reminder", "sms", "en-US", "en") == ("en", "clinic en")
    lang, chosen = resolve(merged, "booking.reminder", "sms", "fr-CA", "en") or ("", None)
    assert lang == "fr" and chosen == DEFAULT_TEMPLATES[("booking.reminder", "sms", "fr")]


def test_unsupported_language_gets_the_clinic_default() -> None:
    lang, t = default_template("booking.reminder", "sms", "de-DE", "fr-CA")
    assert lang == "fr"
    assert t.render(_booking("fr")).text.startswith("Bonjour Amelie")


# --- built-in defaults -----------------------------------------------------------

_ALL = [
    (kind, channel, language)
    for kind in KIND_VARIABLES
    for channel in CHANNELS
    for language in ("en", "en-CA", "fr", "fr-CA")
]


def test_defaults_cover_every_kind_channel_and_language() -> None:
    assert set(DEFAULT_LANGUAGES) == {"en", "fr"}
    for kind in KIND_VARIABLES:
        for channel in CHANNELS:
            for language in DEFAULT_LANGUAGES:
                assert (kind, channel, language) in DEFAULT_TEMPLATES


@pytest.mark.parametrize(("kind", "channel", "language"), _ALL)
def test_every_default_renders(kind: str, channel: str, language: str) -> None:
    lang, template = default_template(kind, channel, language, "en")
    assert lang == language[:2]
    values = _VALUES.get(kind, _booking)(language)
    rendered = template.render(values)
    parts = [rendered.text, rendered.subject or "", rendered.html or ""]
    for part in parts:
        assert "{{" not in part and "{%" not in part and "None" not in part
        # No PHI beyond first name, time, service and clinic.
        assert "Zed Provider" not in part and "North Wing" not in part
    assert "Amelie" in rendered.text or channel == "push"
    if kind.startswith("booking."):
        assert values["booking"]["start_text"] in rendered.text
    if kind == "payment.link" and channel != "push":
        assert values["payment"]["pay_url"] in rendered.text
    if channel in ("sms", "whatsapp"):
        assert rendered.subject is None and rendered.html is None
        assert sms_segments(rendered.text)[0] == "GSM-7"  # French too: no ç, ê...
    if channel == "push":
        assert rendered.subject and len(rendered.text) <= 178 and rendered.html is None
    if channel == "email":
        assert rendered.subject and rendered.html is not None
        assert rendered.html.startswith("<!DOCTYPE html>")
        assert f'<html lang="{language[:2]}">' in rendered.html
        assert "<" not in rendered.text  # a written text part, not HTML
        assert rendered.text.count("\n\n") >= 3  # paragraphs


def test_whatsapp_uses_the_sms_text() -> None:
    for (kind, channel, language), t in DEFAULT_TEMPLATES.items():
        if channel == "whatsapp":
            assert t == DEFAULT_TEMPLATES[(kind, "sms", language)]


def test_video_link_only_when_there_is_one() -> None:
    _, t = default_template("booking.confirmation", "email", "en", "en")
    assert "meet.example" in t.render(_booking()).text
    rendered = t.render(_booking(booking__video_url=""))
    assert "Video" not in rendered.text and rendered.html and "Video" not in rendered.html


def test_default_texts_read_well() -> None:
    _, sms = default_template("booking.reminder", "sms", "fr-CA", "en")
    assert sms.render(_booking("fr-CA")).text == (
        "Bonjour Amelie, rappel de votre rendez-vous chez Maple Physio le mardi 3 mars 2026, "
        "14 h 30 (Physiotherapy). Lien vidéo : https://meet.example/j/123 "
        "Pour confirmer : https://cb.example/c/abc Pour annuler : https://cb.example/x/abc"
    )
    _, push = default_template("booking.reminder", "push", "en", "en")
    rendered = push.render(_booking("en"))
    assert rendered.subject == "Appointment reminder"
    assert rendered.text == "Physiotherapy at Maple Physio on Tuesday, March 3, 2026, 2:30 PM"


# --- variables -------------------------------------------------------------------


def test_dates_in_the_clinic_zone_and_patient_language() -> None:
    summer = datetime(2026, 7, 1, 13, 0, tzinfo=UTC)  # 09:00 EDT
    en = _booking("en")["booking"]
    assert en["start_text"] == "Tuesday, March 3, 2026, 2:30 PM"
    assert (en["date_text"], en["time_text"]) == ("Tuesday, March 3, 2026", "2:30 PM")
    fr = booking_variables(
        **{**_kwargs(), "language": "fr-CA", "start": summer}  # type: ignore[arg-type]
    )["booking"]
    assert fr["start_text"] == "mercredi 1 juillet 2026, 09 h 00"
    for value in (*en.values(), *fr.values()):
        assert "\u202f" not in value and "\u00a0" not in value


def _kwargs() -> dict[str, object]:
    return {
        "language": "en",
        "clinic_default_language": "en",
        "timezone": "America/Toronto",
        "clinic_name": "c",
        "clinic_phone": "p",
        "patient_first_name": "f",
        "start": START,
        "service": "s",
        "provider": "p",
        "location": "l",
        "confirmation_code": "k",
        "confirm_url": "u",
        "cancel_url": "u",
    }


def test_bad_zone_and_naive_datetime_are_refused() -> None:
    with pytest.raises(InvalidInputError) as exc:
        booking_variables(**{**_kwargs(), "timezone": "Mars/Olympus"})  # type: ignore[arg-type]
    assert exc.value.errors[0].field == "timezone"
    with pytest.raises(InvalidInputError) as exc:
        booking_variables(**{**_kwargs(), "start": datetime(2026, 1, 1)})  # type: ignore[arg-type]
    assert exc.value.errors[0].field == "start"


def test_amounts_from_minor_units() -> None:
    assert format_amount(12550, "CAD", babel_locale("en-CA")) == "$125.50"
    assert format_amount(12550, "CAD", babel_locale("fr-CA")) == "125,50 $"
    assert format_amount(1250, "JPY", babel_locale("en")) == "¥1,250"
    assert _payment("fr-CA")["payment"] == {
        "amount_text": "125,50 $",
        "currency": "CAD",
        "receipt_url": "https://cb.example/r/xyz",
    }


def test_unknown_languages_format_in_the_fallback_locale() -> None:
    assert str(babel_locale("xx-YY", "fr-CA")) == "fr_CA"
    assert str(babel_locale(None, None)) == "en"
