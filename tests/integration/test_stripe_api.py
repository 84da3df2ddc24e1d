"""``payments.stripe_api`` against the fake Stripe: nested form encoding, the pinned
version, errors translated in one place without echoing values, the breaker."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from clinicbridge.core.errors import InvalidInputError
from clinicbridge.db.engine import Database
from clinicbridge.http.breaker import default_registry
from clinicbridge.integrations.models import Integration
from clinicbridge.payments import stripe_api
from clinicbridge.payments.errors import PaymentProviderUnavailableError, StripeRefusedError
from clinicbridge.settings import Settings
from clinicbridge.testing.stripe import FakeStripe
from clinicbridge.testing.stripe_wire import decode_form
from tests.conftest import Clinic
from tests.payments_support import KEY, fake, stripe_integration

__all__ = ["fake"]


@pytest.fixture
def acct(
    client: TestClient, clinic: Clinic, fake: FakeStripe, db: Database, settings: Settings
) -> Iterator[stripe_api.Account]:
    integration_id = stripe_integration(client, clinic)
    with db.read() as session:
        integration = session.get(Integration, integration_id)
        assert integration is not None
        yield stripe_api.account(db, settings, integration)
    default_registry.get(clinic.id, integration_id).record_success()


def test_nested_form_keys_round_trip() -> None:
    params = {"a": {"b": [1, {"c": True}]}, "metadata": {"booking_id": "bkg_1"}, "skip": None}
    encoded = stripe_api.encode_form(params)
    assert encoded == {"a[b][0]": "1", "a[b][1][c]": "true", "metadata[booking_id]": "bkg_1"}
    body = httpx.QueryParams(encoded).__str__()
    assert decode_form(body) == {
        "a": {"b": ["1", {"c": "true"}]},
        "metadata": {"booking_id": "bkg_1"},
    }


def test_checkout_session_params_are_stripes(acct: stripe_api.Account, fake: FakeStripe) -> None:
    from datetime import UTC, datetime, timedelta

    made = stripe_api.create_checkout_session(
        acct,
        amount=2500,
        currency="CAD",
        name="Deposit",
        metadata={"payment_id": "pay_1"},
        success_url="https://c.example/ok",
        cancel_url="https://c.example/no",
        expires_at=datetime.now(UTC) + timedelta(minutes=31),
        idempotency_key="cb:pay_1:cs:v1",
    )
    [call] = fake.calls("POST", "/v1/checkout/sessions")
    item = call.params["line_items"][0]
    assert item["price_data"] == {
        "currency": "cad",
        "unit_amount": "2500",
        "product_data": {"name": "Deposit"},
    }
    assert call.params["payment_intent_data"]["metadata"] == {"payment_id": "pay_1"}
    assert call.stripe_version == stripe_api.STRIPE_VERSION and made.amount_total == 2500


def test_a_refused_key_is_named_but_never_echoed(
    acct: stripe_api.Account, fake: FakeStripe
) -> None:
    fake.api_key = "sk_test_someoneElse000000000000"
    with pytest.raises(StripeRefusedError) as refused:
        stripe_api.balance(acct)
    assert "refused the API key" in refused.value.detail and refused.value.status_code == 401
    assert KEY not in refused.value.detail and KEY[-4:] not in str(refused.value.problem_extra())


def test_invalid_parameters_name_our_field_or_stripes_code(
    acct: stripe_api.Account, fake: FakeStripe
) -> None:
    with pytest.raises(InvalidInputError) as bad:
        stripe_api.create_payment_intent(
            acct, amount=0, currency="cad", metadata={}, description="x", idempotency_key="k1"
        )
    assert bad.value.errors[0].field == "amount" and "0" not in bad.value.errors[0].message
    with pytest.raises(StripeRefusedError) as missing:
        stripe_api.retrieve_payment_intent(acct, "pi_unknown123")
    assert missing.value.code == "resource_missing" and "pi_unknown123" not in missing.value.detail


def test_outages_are_retryable_and_open_the_breaker(
    acct: stripe_api.Account, fake: FakeStripe
) -> None:
    fake.fail(500, times=20)
    for _ in range(5):  # 500 is not retried in-process: one attempt each
        with pytest.raises(PaymentProviderUnavailableError) as down:
            stripe_api.balance(acct)
        assert down.value.retryable and down.value.status == 503
    seen = fake.received
    with pytest.raises(PaymentProviderUnavailableError):
        stripe_api.balance(acct)  # refused here: the breaker is open
    assert fake.received == seen
    fake.down = True
    with pytest.raises(PaymentProviderUnavailableError):
        stripe_api.balance(acct)


def test_429_is_retried_then_answered(acct: stripe_api.Account, fake: FakeStripe) -> None:
    fake.fail(429, times=1)
    assert stripe_api.balance(acct)["object"] == "balance"
    assert fake.received == 2 and len(fake.calls("GET", "/v1/balance")) == 1
