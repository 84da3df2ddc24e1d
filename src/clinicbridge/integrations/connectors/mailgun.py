"""Mailgun: e-mail. Webhooks carry an HMAC of timestamp + token with the signing key."""

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
from clinicbridge.webhooks.verifiers import mailgun


class MailgunCredentials(Credentials):
    api_key: Cred
    webhook_secret: Cred | None = None  # Mailgun's "HTTP webhook signing key"


class MailgunSettings(HttpSettings):
    # The region: https://api.mailgun.net (US) or https://api.eu.mailgun.net (EU).
    api_base: HttpUrl = HttpUrl("https://api.mailgun.net")
    domain: Annotated[str, Field(min_length=3, max_length=253)]
    # What sending needs (optional so integrations made for webhooks alone stay valid;
    # the sender refuses to send without ``from_email``).
    from_email: EmailStr | None = None
    from_name: (
        Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\r\n\"<>]*$")] | None
    ) = None


class Mailgun(Connector):
    key = "mailgun"
    display_name = "Mailgun"
    category = "email"
    credentials_schema = MailgunCredentials
    settings_schema = MailgunSettings
    verifier = staticmethod(mailgun.verify)
    webhook_secret_field = "webhook_secret"
    hinted_fields: ClassVar[tuple[str, ...]] = ("api_key",)

    def test_connection(self, ctx: ConnectorContext) -> TestResult:
        domain = ctx.settings["domain"]
        return http_test(
            ctx,
            f"/v3/domains/{domain}",
            operation="domains.get",
            auth=("api", ctx.secret("api_key")),
        )
