"""Configuration from the environment (prefix ``CLINICBRIDGE_``).

Settings are read once at start-up into an immutable object that is passed
explicitly to whoever needs it; nothing reads the environment later.
"""

from __future__ import annotations

import base64
import os
import secrets
import stat
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

    @property
    def public_base_url(self) -> str:
        """The URL clients use to reach this service (for links and cookies)."""
        return self.base_url or f"http://{self.host}:{self.port}"

    @property
    def secure_cookies(self) -> bool:
        return self.public_base_url.startswith("https://")


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment; raise SettingsError naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "?"
        raise SettingsError(f"{ENV_PREFIX}{field.upper()}: {first['msg']}") from None


def load_master_key(path: Path) -> bytes:
    """Return the master key, creating it (mode 0600) on first run.

    Refuses a key file that other users can read or write: the master key
    protects every clinic's credentials.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_bytes(MASTER_KEY_BYTES)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(base64.b64encode(key).decode() + "\n")
        return key
    mode = path.stat().st_mode
    if mode & (stat.S_IROTH | stat.S_IWOTH):
        raise SettingsError(
            f"{ENV_PREFIX}MASTER_KEY_FILE: {path} is accessible by other users "
            f"(mode {stat.filemode(mode)}); run: chmod 600 {path}"
        )
    try:
        key = base64.b64decode(path.read_text().strip(), validate=True)
    except ValueError:
        key = b""
    if len(key) != MASTER_KEY_BYTES:
        raise SettingsError(
            f"{ENV_PREFIX}MASTER_KEY_FILE: {path} does not hold a base64 "
            f"{MASTER_KEY_BYTES}-byte key"
        )
    return key
