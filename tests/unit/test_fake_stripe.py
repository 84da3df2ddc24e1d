"""The fake Stripe (``clinicbridge.testing.stripe``) against the official ``stripe`` SDK:
the SDK encodes the requests (nested form keys, idempotency keys) and parses the answers
and errors, so the fake's shapes are the SDK's, not our own agreeing with itself."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
import stripe

from clinicbridge.testing.stripe import FakeStripe
from clinicbridge.testing.stripe_wire import decode_form

KEY = "sk_test_contract0000000000000000000"
WHSEC = "whsec_contract000000000000000000000"


@pytest.fixture
def fake() -> FakeStripe:
    return FakeStripe(api_key=KEY, webhook_secret=WHSEC)


@pytest.fixture
def sdk(fake: FakeStripe) -> Iterator[stripe.StripeClient]:
    with fake.serve() as url:
        yield stripe.StripeClient(KEY, base_addresses={"api": url}, max_network_retries=0)


def test_nested_form_keys_decode_as_stripe_documents_them() -> None:
    body = (
        "metadata[booking_id]=bkg_1&line_items[0][price_data][currency]=cad"
        "&line_items[0][quantity]=2&line_items[1][price_data][unit_amount]=5"
        "&payment_method_types[0]=card&expand[]=latest_charge&expand[]=customer"
    )
    assert decode_form(body) == {
        "metadata": {"booking_id": "bkg_1"},
        "line_items": [
            {"price_data": {"currency": "cad"}, "quantity": "2"},
            {"price_data": {"unit_amount": "5"}},
        ],
        "payment_method_types": ["card"],
        "expand": ["latest_charge", "customer"],
    }


def test_sdk_creates_confirms_and_refunds_a_payment_intent(
    fake: FakeStripe, sdk: stripe.StripeClient
) -> None:
    intent = sdk.v1.payment_intents.create(
        params={"amount": 4500, "currency": "cad", "metadata": {"booking_id": "bkg_1"}}
    )
    assert intent.status == "requires_payment_method" and intent.amount == 4500
    assert intent.client_secret.startswith(f"{intent.id}_secret_")
    assert intent.metadata["booking_id"] == "bkg_1"
    confirmed = sdk.v1.payment_intents.confirm(intent.id, params={"payment_method": "pm_card_visa"})
    assert confirmed.status == "succeeded" and confirmed.amount_received == 4500
    charge = sdk.v1.charges.retrieve(str(confirmed.latest_charge))
    assert charge.amount_captured == 4500 and charge.payment_intent == intent.id
    refund = sdk.v1.refunds.create(params={"payment_intent": intent.id, "amount": 1000})
    assert (refund.status, refund.amount, refund.charge) == ("succeeded", 1000, charge.id)
    listed = sdk.v1.refunds.list(params={"charge": charge.id})
    assert [r.id for r in listed.data] == [refund.id] and listed.has_more is False
    assert fake.get(charge.id)["amount_refunded"] == 1000
    types = [e["type"] for e in fake.events]
    assert types == [
        "payment_intent.created",
        "charge.succeeded",
        "payment_intent.succeeded",
        "refund.created",
        "charge.refunded",
    ]


def test_sdk_sees_card_errors_and_missing_objects_in_stripes_shape(
    sdk: stripe.StripeClient,
) -> None:
    intent = sdk.v1.payment_intents.create(params={"amount": 100, "currency": "usd"})
    with pytest.raises(stripe.CardError) as declined:
        sdk.v1.payment_intents.confirm(
            intent.id, params={"payment_method": "pm_card_chargeDeclinedInsufficientFunds"}
        )
    assert declined.value.code == "card_declined"
    assert declined.value.error is not None
    assert declined.value.error.decline_code == "insufficient_funds"
    assert declined.value.http_status == 402
    with pytest.raises(stripe.InvalidRequestError) as missing:
        sdk.v1.payment_intents.retrieve("pi_nope")
    assert (missing.value.code, missing.value.http_status) == ("resource_missing", 404)
    with pytest.raises(stripe.InvalidRequestError) as no_amount:
        sdk.v1.payment_intents.create(params={"currency": "usd"})  # type: ignore[typeddict-item]
    assert no_amount.value.param == "amount"


def test_a_wrong_key_is_a_401_authentication_error(fake: FakeStripe) -> None:
    with fake.serve() as url:
        other = stripe.StripeClient("sk_test_wrong0000000000", base_addresses={"api": url})
        with pytest.raises(stripe.AuthenticationError) as refused:
            other.v1.balance.retrieve()
    assert refused.value.http_status == 401
    assert "sk_test_wrong" not in str(refused.value)  # masked, as Stripe does


def test_idempotency_key_replays_the_same_answer_and_refuses_other_params(
    fake: FakeStripe, sdk: stripe.StripeClient
) -> None:
    params = {"amount": 2000, "currency": "cad"}
    first = sdk.v1.payment_intents.create(params=params, options={"idempotency_key": "cb:k:1"})  # type: ignore[arg-type]
    again = sdk.v1.payment_intents.create(params=params, options={"idempotency_key": "cb:k:1"})  # type: ignore[arg-type]
    assert first.id == again.id and len(fake.of_type("payment_intent")) == 1
    assert fake.requests[-1].replayed is True
    with pytest.raises(stripe.IdempotencyError):
        sdk.v1.payment_intents.create(
            params={"amount": 2001, "currency": "cad"}, options={"idempotency_key": "cb:k:1"}
        )


def test_checkout_session_in_payment_mode(fake: FakeStripe, sdk: stripe.StripeClient) -> None:
    session = sdk.v1.checkout.sessions.create(
        params={
            "mode": "payment",
            "line_items": [
                {
                    "price_data": {
                        "currency": "cad",
                        "unit_amount": 2500,
                        "product_data": {"name": "Deposit"},
                    },
                    "quantity": 1,
                }
            ],
            "success_url": "https://clinic.example/ok",
            "payment_intent_data": {"metadata": {"payment_id": "pay_1"}},
        }
    )
    assert session.url is not None and session.url.endswith(session.id)
    assert session.amount_total == 2500 and session.status == "open"
    paid = fake.complete_checkout(session.id)
    assert paid["payment_status"] == "paid"
    intent = fake.get(paid["payment_intent"])
    assert intent["status"] == "succeeded" and intent["metadata"] == {"payment_id": "pay_1"}
    with pytest.raises(stripe.InvalidRequestError):
        sdk.v1.checkout.sessions.create(
            params={"mode": "payment", "line_items": [{"price_data": {"currency": "cad"}}]}  # type: ignore[typeddict-item]
        )


def test_failures_before_and_after_the_work(fake: FakeStripe) -> None:
    client = httpx.Client(
        transport=httpx.MockTransport(fake),
        base_url="https://api.stripe.test",
        headers={"Authorization": f"Bearer {KEY}"},
    )
    fake.fail(503)
    refused = client.post("/v1/payment_intents", data={"amount": "100", "currency": "cad"})
    assert refused.status_code == 503 and refused.json()["error"]["type"] == "api_error"
    assert fake.of_type("payment_intent") == []
    fake.fail_timeout()
    with pytest.raises(httpx.ReadTimeout):
        client.post(
            "/v1/payment_intents",
            data={"amount": "100", "currency": "cad"},
            headers={"Idempotency-Key": "cb:x"},
        )
    [created] = fake.of_type("payment_intent")  # done, though the answer was lost
    retried = client.post(
        "/v1/payment_intents",
        data={"amount": "100", "currency": "cad"},
        headers={"Idempotency-Key": "cb:x"},
    )
    assert retried.json()["id"] == created["id"]
    assert retried.headers["Idempotent-Replayed"] == "true"
    fake.down = True
    with pytest.raises(httpx.ConnectError):
        client.get("/v1/balance")


def test_deliveries_are_signed_by_the_callers_signer_and_verify_with_the_sdk(
    fake: FakeStripe, sdk: stripe.StripeClient
) -> None:
    intent = sdk.v1.payment_intents.create(params={"amount": 700, "currency": "cad"})
    sdk.v1.payment_intents.cancel(intent.id)
    pairs = fake.deliveries(stripe.WebhookSignature.generate_signature_header)
    assert [json.loads(b)["type"] for b, _ in pairs] == [
        "payment_intent.created",
        "payment_intent.canceled",
    ]
    for body, header in pairs:
        event = stripe.Webhook.construct_event(body, header, WHSEC)
        assert event.data.object["id"] == intent.id
    assert fake.deliveries(stripe.WebhookSignature.generate_signature_header) == []
