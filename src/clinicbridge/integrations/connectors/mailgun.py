"""Mailgun: e-mail. Webhooks carry an HMAC of timestamp + token with the signing key."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field, HttpUrl

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
    api_base: HttpUrl = HttpUrl("https://api.mailgun.net")
    domain: Annotated[str, Field(min_length=3, max_length=253)]


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
