"""Twilio: SMS and WhatsApp. Webhooks signed with the account's auth token."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field, HttpUrl, model_validator

from clinicbridge.integrations.connector import (
    Connector,
    ConnectorContext,
    Cred,
    Credentials,
    HttpSettings,
    TestResult,
    http_test,
)
from clinicbridge.webhooks.verifiers import twilio


class TwilioCredentials(Credentials):
    account_sid: Annotated[str, Field(pattern=r"^AC[0-9a-fA-F]{32}$")]
    auth_token: Cred


class TwilioSettings(HttpSettings):
    api_base: HttpUrl = HttpUrl("https://api.twilio.com")
    from_number: Annotated[str, Field(pattern=r"^\+[1-9]\d{6,14}$")] | None = None
    messaging_service_sid: Annotated[str, Field(pattern=r"^MG[0-9a-fA-F]{32}$")] | None = None

    @model_validator(mode="after")
    def _a_sender(self) -> TwilioSettings:
        if self.from_number is None and self.messaging_service_sid is None:
            raise ValueError("set from_number or messaging_service_sid")
        return self


class Twilio(Connector):
    key = "twilio"
    display_name = "Twilio"
    category = "messaging"
    credentials_schema = TwilioCredentials
    settings_schema = TwilioSettings
    verifier = staticmethod(twilio.verify)
    webhook_secret_field = "auth_token"  # Twilio signs with the auth token itself
    hinted_fields: ClassVar[tuple[str, ...]] = ("account_sid",)

    def test_connection(self, ctx: ConnectorContext) -> TestResult:
        sid = ctx.secret("account_sid")
        return http_test(
            ctx,
            f"/2010-04-01/Accounts/{sid}.json",
            operation="account.fetch",
            auth=(sid, ctx.secret("auth_token")),
        )
