"""The fake Stripe's Connect and Terminal parts against the official ``stripe`` SDK: the
SDK encodes the requests (``Stripe-Account`` included) and parses the answers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import stripe

from clinicbridge.testing.stripe import FakeStripe

KEY = "sk_test_contract0000000000000000000"


@pytest.fixture
def fake() -> FakeStripe:
    return FakeStripe(api_key=KEY)


@pytest.fixture
def sdk(fake: FakeStripe) -> Iterator[stripe.StripeClient]:
    with fake.serve() as url:
        yield stripe.StripeClient(KEY, base_addresses={"api": url}, max_network_retries=0)


def _paid_charge(sdk: stripe.StripeClient, amount: int = 9000) -> str:
    intent = sdk.v1.payment_intents.create(params={"amount": amount, "currency": "cad"})
    confirmed = sdk.v1.payment_intents.confirm(intent.id, params={"payment_method": "pm_card_visa"})
    return str(confirmed.latest_charge)


def test_express_account_onboarding_link_and_its_updates(
    fake: FakeStripe, sdk: stripe.StripeClient
) -> None:
    account = sdk.v1.accounts.create(
        params={"type": "express", "capabilities": {"transfers": {"requested": True}}}
    )
    assert account.id.startswith("acct_") and account.type == "express"
    assert account.payouts_enabled is False and account.details_submitted is False
    assert account.requirements is not None and account.requirements.currently_due
    assert "_balance" not in account
    link = sdk.v1.account_links.create(
        params={
            "account": account.id,
            "type": "account_onboarding",
            "refresh_url": "https://clinic.example/refresh",
            "return_url": "https://clinic.example/done",
        }
    )
    assert link.url.startswith("https://") and link.expires_at > link.created
    with pytest.raises(stripe.InvalidRequestError) as missing:
        sdk.v1.account_links.create(params={"account": account.id, "type": "account_onboarding"})
    assert missing.value.param in ("return_url", "refresh_url")
    fake.onboard(account.id)
    again = sdk.v1.accounts.retrieve(account.id)
    assert again.payouts_enabled is True and again.requirements is not None
    assert again.requirements.past_due == [] and again.requirements.disabled_reason is None
    event = fake.event("account.updated", account.id)
    assert event["account"] == account.id


def test_transfers_need_an_active_destination_and_land_in_its_balance(
    fake: FakeStripe, sdk: stripe.StripeClient
) -> None:
    account = sdk.v1.accounts.create(
        params={"type": "express", "capabilities": {"transfers": {"requested": True}}}
    )
    charge = _paid_charge(sdk)
    params = {
        "amount": 6300,
        "currency": "cad",
        "destination": account.id,
        "source_transaction": charge,
    }
    with pytest.raises(stripe.InvalidRequestError) as refused:
        sdk.v1.transfers.create(params=params)
    assert refused.value.code == "insufficient_capabilities_for_transfer"
    fake.onboard(account.id)
    transfer = sdk.v1.transfers.create(params=params)
    assert (transfer.amount, transfer.destination) == (6300, account.id)
    with pytest.raises(stripe.InvalidRequestError):  # more than the charge has left
        sdk.v1.transfers.create(params={**params, "amount": 3000})
    balance = sdk.v1.balance.retrieve(options={"stripe_account": account.id})
    assert [(b.amount, b.currency) for b in balance.pending] == [(6300, "cad")]
    platform = sdk.v1.balance.retrieve()
    assert platform.available[0].amount == 9000  # the platform's own, not the account's


def test_terminal_token_reader_presents_a_card_and_the_intent_is_captured(
    fake: FakeStripe, sdk: stripe.StripeClient
) -> None:
    token = sdk.v1.terminal.connection_tokens.create(params={"location": "tml_desk"})
    assert token.secret.startswith("pst_test_") and token.location == "tml_desk"
    intent = sdk.v1.payment_intents.create(
        params={
            "amount": 4000,
            "currency": "cad",
            "payment_method_types": ["card_present"],
            "capture_method": "manual",
        }
    )
    with pytest.raises(stripe.InvalidRequestError) as early:
        sdk.v1.payment_intents.capture(intent.id)
    assert early.value.code == "payment_intent_unexpected_state"
    reader = fake.add_reader()
    sdk.v1.terminal.readers.process_payment_intent(reader, params={"payment_intent": intent.id})
    sdk.v1.test_helpers.terminal.readers.present_payment_method(reader)
    presented = sdk.v1.payment_intents.retrieve(intent.id)
    assert presented.status == "requires_capture" and presented.amount_capturable == 4000
    captured = sdk.v1.payment_intents.capture(intent.id)
    assert captured.status == "succeeded" and captured.amount_received == 4000
    charge = fake.get(str(captured.latest_charge))
    assert charge["captured"] and charge["payment_method_details"]["type"] == "card_present"
    types = [e["type"] for e in fake.events]
    assert types[-3:] == [
        "payment_intent.amount_capturable_updated",
        "charge.captured",
        "payment_intent.succeeded",
    ]
