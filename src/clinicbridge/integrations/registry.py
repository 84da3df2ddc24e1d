"""Installed connectors, and the handlers domains register for inbound event types.

A webhook travels one straight path: route → inbox → job → the handlers
registered here for its event type (``payment_intent.succeeded`` → payments).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from clinicbridge.integrations.connector import Connector
from clinicbridge.integrations.connectors import ALL
from clinicbridge.jobs.registry import JobContext


@dataclass(frozen=True)
class StoredEvent:
    """An inbound event as handlers see it (already verified and deduplicated)."""

    id: str
    tenant_id: str
    integration_id: str
    connector: str
    provider_event_id: str
    type: str
    payload: dict[str, Any]


class EventHandler(Protocol):
    """Must be idempotent: replays and retries deliver the same event again."""

    def __call__(self, event: StoredEvent, job: JobContext) -> None: ...


@dataclass
class IntegrationRegistry:
    connectors: dict[str, Connector] = field(default_factory=dict)
    handlers: dict[tuple[str, str], list[EventHandler]] = field(default_factory=dict)

    def install(self, connector: type[Connector]) -> None:
        self.connectors[connector.key] = connector()

    def connector(self, key: str) -> Connector | None:
        return self.connectors.get(key)

    def on(self, connector: str, event_type: str) -> Callable[[EventHandler], EventHandler]:
        """Register a handler for ``event_type`` from ``connector`` (``*`` matches any)."""

        def decorate(handler: EventHandler) -> EventHandler:
            self.handlers.setdefault((connector, event_type), []).append(handler)
            return handler

        return decorate

    def handlers_for(self, connector: str, event_type: str) -> list[EventHandler]:
        found: list[EventHandler] = []
        for key in ((connector, event_type), (connector, "*"), ("*", event_type), ("*", "*")):
            found.extend(self.handlers.get(key, []))
        return found


def default_registry() -> IntegrationRegistry:
    registry = IntegrationRegistry()
    for connector in ALL:
        registry.install(connector)
    return registry


# The application's registry: domain packages subscribe to event types on it.
integrations = default_registry()
