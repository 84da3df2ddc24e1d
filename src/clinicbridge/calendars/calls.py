"""Authorized calls for one sync round: one ``OutboundClient``, the account's token.

A 401 with a token we thought valid (revoked early, clock skew) refreshes it once,
single-flight like any refresh, and repeats the call; a second 401 is an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any

import httpx

from clinicbridge.calendars.tokens import AccessToken, TokenSource
from clinicbridge.core.errors import ExternalServiceError
from clinicbridge.http import OutboundClient
from clinicbridge.integrations.connector import ConnectorContext


class Authorized:
    def __init__(
        self, conn: ConnectorContext, tokens: TokenSource, account_id: str, **client: Any
    ) -> None:
        self.integration = conn.integration_id
        self._client: OutboundClient = conn.client(**client)  # timeouts, retry policy
        self._tokens, self._account_id = tokens, account_id
        self._token: AccessToken | None = None

    def request(
        self,
        method: str,
        url: str,
        *,
        operation: str,
        params: Mapping[str, str | int | float] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        for attempt in (1, 2):
            if self._token is None or attempt == 2:
                stale = self._token.version if self._token is not None else None
                self._token = self._tokens.get(self._account_id, stale_version=stale)
            response = self._client.request(
                method,
                url,
                operation=operation,
                params=params,
                json=json,
                headers={
                    **(headers or {}),
                    "Authorization": f"Bearer {self._token.value.reveal()}",
                },
            )
            if response.status_code != 401:
                return response
        raise ExternalServiceError(
            f"{self.integration} {operation}: the provider refused a fresh access token (401)",
            integration=self.integration,
            status_code=401,
            retryable=False,
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Authorized:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def refused(integration: str, operation: str, response: httpx.Response) -> ExternalServiceError:
    """A 4xx we cannot act on (the provider's own message is never copied)."""
    return ExternalServiceError(
        f"{integration} {operation}: the provider answered HTTP {response.status_code}",
        integration=integration,
        status_code=response.status_code,
        retryable=False,
    )


def json_of(response: httpx.Response) -> dict[str, Any]:
    try:
        payload = response.json()
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}
