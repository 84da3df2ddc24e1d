"""SendGrid: e-mail. The Event Webhook is signed with ECDSA; we hold its public key."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import EmailStr, Field, HttpUrl

from clinicbridge.integrations.connector import (
    Connector,
    ConnectorContext,
    Cred,
    Credentials,
    HttpSettings,
    TestResult,
    http_test,
)
from clinicbridge.webhooks.verifiers import sendgrid


class SendGridCredentials(Credentials):
    api_key: Cred
    # Not a secret (it is a public key), but clinics paste it with the rest.
    webhook_verification_key: Cred | None = None


class SendGridSettings(HttpSettings):
    api_base: HttpUrl = HttpUrl("https://api.sendgrid.com")
    # What sending needs (optional so integrations made for webhooks alone stay valid;
    # the sender refuses to send without ``from_email``).
    from_email: EmailStr | None = None
    from_name: (
        Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\r\n\"<>]*$")] | None
    ) = None


class SendGrid(Connector):
    key = "sendgrid"
    display_name = "SendGrid"
    category = "email"
    credentials_schema = SendGridCredentials
    settings_schema = SendGridSettings
    verifier = staticmethod(sendgrid.verify)
    webhook_secret_field = "webhook_verification_key"
    hinted_fields: ClassVar[tuple[str, ...]] = ("api_key",)

    def test_connection(self, ctx: ConnectorContext) -> TestResult:
        return http_test(
            ctx,
            "/v3/scopes",
            operation="scopes.list",
            headers={"Authorization": f"Bearer {ctx.secret('api_key')}"},
        )
