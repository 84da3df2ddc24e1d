"""Settings from the environment and the master key file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from clinicbridge.settings import SettingsError, load_master_key, load_settings


def test_defaults() -> None:
    settings = load_settings()
    assert settings.database_url == "sqlite:///./data/clinicbridge.db"
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.public_base_url == "http://127.0.0.1:8000"
    assert settings.max_body_bytes == 1024 * 1024
    assert settings.secure_cookies is False


def test_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLINICBRIDGE_PORT", "9001")
    monkeypatch.setenv("CLINICBRIDGE_BASE_URL", "https://clinic.example.com/")
    settings = load_settings()
    assert settings.port == 9001
    assert settings.public_base_url == "https://clinic.example.com"
    assert settings.secure_cookies is True


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CLINICBRIDGE_PORT", "eighty"),
        ("CLINICBRIDGE_PORT", "70000"),
        ("CLINICBRIDGE_DATABASE_URL", "mysql://db/clinic"),
        ("CLINICBRIDGE_BASE_URL", "clinic.example.com"),
    ],
)
def test_invalid_setting_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert str(err.value).startswith(f"{name}: ")
    assert "\n" not in str(err.value)


def test_master_key_is_created_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "master.key"
    key = load_master_key(path)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_master_key(path) == key


def test_world_readable_master_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    load_master_key(path)
    os.chmod(path, 0o644)
    with pytest.raises(SettingsError, match=r"CLINICBRIDGE_MASTER_KEY_FILE: .*chmod 600"):
        load_master_key(path)


def test_corrupt_master_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    path.write_text("not a key")
    os.chmod(path, 0o600)
    with pytest.raises(SettingsError, match="does not hold a base64 32-byte key"):
        load_master_key(path)
