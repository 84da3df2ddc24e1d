"""Daily.co: video rooms (private, with expiry) and per-participant meeting tokens."""

from __future__ import annotations

from typing import ClassVar

from pydantic import HttpUrl

from clinicbridge.integrations.connector import (
    Connector,
    ConnectorContext,
    Cred,
    Credentials,
    HttpSettings,
    TestResult,
    http_test,
)


class DailyCredentials(Credentials):
    api_key: Cred


class DailySettings(HttpSettings):
    api_base: HttpUrl = HttpUrl("https://api.daily.co/v1")


class Daily(Connector):
    key = "daily"
    display_name = "Daily (video rooms)"
    category = "video"
    credentials_schema = DailyCredentials
    settings_schema = DailySettings
    hinted_fields: ClassVar[tuple[str, ...]] = ("api_key",)

    def test_connection(self, ctx: ConnectorContext) -> TestResult:
        return http_test(
            ctx,
            "/rooms",
            operation="rooms.list",
            headers={"Authorization": f"Bearer {ctx.secret('api_key')}"},
        )
