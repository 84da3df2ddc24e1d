"""Resend: e-mail. Webhooks follow the Standard Webhooks scheme (``whsec_`` secret)."""

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
from clinicbridge.webhooks.verifiers import standard


class ResendCredentials(Credentials):
    api_key: Cred
    webhook_secret: Annotated[str, Field(pattern=r"^whsec_")] | None = None


class ResendSettings(HttpSettings):
    api_base: HttpUrl = HttpUrl("https://api.resend.com")
    # What sending needs (optional so integrations made for webhooks alone stay valid;
    # the sender refuses to send without ``from_email``).
    from_email: EmailStr | None = None
    from_name: (
        Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\r\n\"<>]*$")] | None
    ) = None


class Resend(Connector):
    key = "resend"
    display_name = "Resend"
    category = "email"
    credentials_schema = ResendCredentials
    settings_schema = ResendSettings
    verifier = staticmethod(standard.verify)
    webhook_secret_field = "webhook_secret"
    hinted_fields: ClassVar[tuple[str, ...]] = ("api_key",)

    def test_connection(self, ctx: ConnectorContext) -> TestResult:
        return http_test(
            ctx,
            "/domains",
            operation="domains.list",
            headers={"Authorization": f"Bearer {ctx.secret('api_key')}"},
        )
