"""Configuration from the environment (prefix ``CLINICBRIDGE_``).

Settings are read once at start-up into an immutable object that is passed
explicitly to whoever needs it; nothing reads the environment later.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "CLINICBRIDGE_"
MASTER_KEY_BYTES = 32


class SettingsError(Exception):
    """A setting is missing or invalid; the message names the variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    database_url: str = "sqlite:///./data/clinicbridge.db"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    base_url: str = ""
    master_key_file: Path = Path("./data/master.key")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    session_ttl_hours: int = Field(default=12, ge=1, le=24 * 30)
    worker_heartbeat_seconds: float = Field(default=5.0, gt=0, le=60)
    # Hostnames and CIDRs outbound webhooks may reach although private (see webhooks.ssrf).
    webhook_allowlist: str = ""

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not value.startswith(("sqlite://", "postgresql://", "postgresql+psycopg://")):
            raise ValueError("must start with sqlite:// or postgresql://")
        return value

    @field_validator("base_url")
    @classmethod
    def _http_base(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("webhook_allowlist")
    @classmethod
    def _allowlist(cls, value: str) -> str:
        parse_allowlist(value)  # a bad entry stops start-up, not the first delivery
        return value

    @property
    def public_base_url(self) -> str:
        """The URL clients use to reach this service (for links and cookies)."""
        return self.base_url or f"http://{self.host}:{self.port}"

    @property
    def secure_cookies(self) -> bool:
        return self.public_base_url.startswith("https://")


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_allowlist(value: str) -> tuple[frozenset[str], tuple[IPNetwork, ...]]:
    """``CLINICBRIDGE_WEBHOOK_ALLOWLIST``: comma-separated hostnames and CIDRs (or IPs)."""
    hosts: set[str] = set()
    networks: list[IPNetwork] = []
    for raw in value.split(","):
        entry = raw.strip().lower().rstrip(".")
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            continue
        except ValueError:
            pass
        labels = entry.split(".")
        if not all(
            0 < len(x) < 64 and x.replace("-", "").replace("_", "").isalnum() for x in labels
        ):
            raise ValueError(f"not a hostname or CIDR: {raw.strip()!r}")
        hosts.add(entry)
    return frozenset(hosts), tuple(networks)


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment; raise SettingsError naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "?"
        raise SettingsError(f"{ENV_PREFIX}{field.upper()}: {first['msg']}") from None


def load_master_key(path: Path) -> bytes:
    """Return the active master key, creating the key file (mode 0600) on first run.

    Refuses a key file that other users can read or write: the master key
    protects every clinic's credentials. The file is a key ring (see
    ``clinicbridge.vault.keyring``); the legacy one-key file is version 1.
    """
    # Imported here: the key ring builds on this module (SettingsError).
    from clinicbridge.vault.keyring import KeyRing

    return KeyRing.load(path).active_key
