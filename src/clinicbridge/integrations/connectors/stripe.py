"""Stripe: payments. Webhooks signed with ``Stripe-Signature`` and the ``whsec_`` secret."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import AfterValidator, Field, HttpUrl

from clinicbridge.core.validation import check_currency
from clinicbridge.integrations.connector import (
    Connector,
    ConnectorContext,
    Credentials,
    HttpSettings,
    TestResult,
    http_test,
)
from clinicbridge.webhooks.verifiers import stripe


class StripeCredentials(Credentials):
    api_key: Annotated[str, Field(min_length=8, max_length=255, pattern=r"^(sk|rk)_(live|test)_")]
    webhook_secret: Annotated[str, Field(pattern=r"^whsec_")] | None = None


class StripeSettings(HttpSettings):
    api_base: HttpUrl = HttpUrl("https://api.stripe.com")
    currency: Annotated[str, AfterValidator(check_currency)] = "USD"


class Stripe(Connector):
    key = "stripe"
    display_name = "Stripe"
    category = "payments"
    credentials_schema = StripeCredentials
    settings_schema = StripeSettings
    verifier = staticmethod(stripe.verify)
    webhook_secret_field = "webhook_secret"
    hinted_fields: ClassVar[tuple[str, ...]] = ("api_key",)

    def test_connection(self, ctx: ConnectorContext) -> TestResult:
        return http_test(
            ctx,
            "/v1/balance",
            operation="balance.retrieve",
            headers={"Authorization": f"Bearer {ctx.secret('api_key')}"},
        )
