"""Sealed-field format, data key wrapping, and the master key ring file."""

from __future__ import annotations

import base64
import os
import secrets
import stat
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from clinicbridge.core.errors import DecryptionError, VaultError
from clinicbridge.settings import SettingsError, load_master_key
from clinicbridge.vault import crypto
from clinicbridge.vault.keyring import KeyRing

# -- sealed fields ------------------------------------------------------------------


@pytest.fixture
def aead() -> AESGCM:
    return AESGCM(crypto.new_data_key())


def ctx(tenant: str = "ten_A", integration: str = "int_1", field: str = "api_key") -> bytes:
    return crypto.field_context(tenant, integration, field, 1)


def test_seal_and_open_round_trip(aead: AESGCM) -> None:
    plaintext = "sk_live_" + secrets.token_urlsafe(24) + " é ✓"
    sealed = crypto.seal_field(aead, 1, ctx(), plaintext)
    assert sealed.startswith("cb1:1:") and plaintext not in sealed
    version, blob = crypto.parse_sealed(sealed)
    assert version == 1 and crypto.open_field(aead, blob, ctx()) == plaintext
    assert crypto.seal_field(aead, 1, ctx(), plaintext) != sealed  # fresh nonce


@pytest.mark.parametrize(
    "other",
    [
        ctx(tenant="ten_B"),
        ctx(integration="int_2"),
        ctx(field="webhook_secret"),
        crypto.field_context("ten_A", "int_1", "api_key", 2),
    ],
)
def test_a_sealed_field_opens_only_in_its_own_context(aead: AESGCM, other: bytes) -> None:
    plaintext = secrets.token_urlsafe(16)
    _, blob = crypto.parse_sealed(crypto.seal_field(aead, 1, ctx(), plaintext))
    with pytest.raises(DecryptionError) as err:
        crypto.open_field(aead, blob, other)
    assert plaintext not in str(err.value)


def test_context_parts_cannot_be_shifted() -> None:
    assert crypto.field_context("ten_A", "int_1x", "y", 1) != crypto.field_context(
        "ten_A", "int_1", "xy", 1
    )


def test_tampered_or_malformed_values_are_refused(aead: AESGCM) -> None:
    sealed = crypto.seal_field(aead, 1, ctx(), "webhook-secret-value")
    body = sealed.split(":")[2]
    flipped = body[:10] + ("A" if body[10] != "A" else "B") + body[11:]
    for bad in (
        f"cb1:1:{flipped}",
        sealed[:-4],
        "cb1:1:" + base64.urlsafe_b64encode(b"short").decode(),
        "cb2" + sealed[3:],
        "cb1:x:" + body,
        "cb1:0:" + body,
        "plain text",
        "",
    ):
        with pytest.raises(DecryptionError):
            _, blob = crypto.parse_sealed(bad)
            crypto.open_field(aead, blob, ctx())


def test_wrapped_data_key_is_bound_to_tenant_and_versions() -> None:
    master, data_key = os.urandom(32), crypto.new_data_key()
    wrapped = crypto.wrap_key(master, data_key, "ten_A", 1, 3)
    assert data_key not in wrapped and len(wrapped) == 12 + 32 + 16
    assert crypto.unwrap_key(master, wrapped, "ten_A", 1, 3) == data_key
    for tenant, version, master_version, key in (
        ("ten_B", 1, 3, master),
        ("ten_A", 2, 3, master),
        ("ten_A", 1, 4, master),
        ("ten_A", 1, 3, os.urandom(32)),
    ):
        with pytest.raises(DecryptionError) as err:
            crypto.unwrap_key(key, wrapped, tenant, version, master_version)
        assert data_key.hex() not in str(err.value) and master.hex() not in str(err.value)


# -- key ring file ---------------------------------------------------------------------


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def write_private(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o600)


def test_new_key_file_is_a_private_version_1_ring(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "master.key"
    ring = KeyRing.load(path)
    assert ring.versions == (1,) and len(ring.active_key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert f"v1:{b64(ring.active_key)}" in path.read_text().splitlines()
    assert load_master_key(path) == ring.active_key


def test_legacy_single_key_file_is_version_1(tmp_path: Path) -> None:
    path, key = tmp_path / "master.key", os.urandom(32)
    write_private(path, b64(key) + "\n")
    ring = KeyRing.load(path)
    assert ring.versions == (1,) and ring.key(1) == key
    assert ring.add_version() == 2
    again = KeyRing.load(path)
    assert again.versions == (1, 2) and again.key(1) == key and again.active_version == 2
    assert load_master_key(path) == again.key(2) != key


def test_ring_format_with_comments_and_gaps(tmp_path: Path) -> None:
    path, k1, k3 = tmp_path / "master.key", os.urandom(32), os.urandom(32)
    write_private(path, f"# keys\n\nv3:{b64(k3)}\n  v1:{b64(k1)}  \n")
    ring = KeyRing.load(path)
    assert ring.versions == (1, 3) and ring.active() == (3, k3) and ring.key(1) == k1
    assert "v3" not in repr(ring) and b64(k3) not in repr(ring)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("v1:{k}\nv1:{k}\n", "lists version 1 twice"),
        ("v1:{k}\nkey2:{k}\n", "line 2 is not v<N>"),
        ("v0:{k}\n", "line 1 is not v<N>"),
        ("v1:{short}\n", "does not hold a base64 32-byte key"),
        ("{k}\n{k}\n", "line 1 is not v<N>"),
        ("# only a comment\n", "does not hold a base64 32-byte key"),
    ],
)
def test_bad_key_files_are_refused_without_echoing_keys(
    tmp_path: Path, text: str, message: str
) -> None:
    path, key = tmp_path / "master.key", b64(os.urandom(32))
    write_private(path, text.format(k=key, short=b64(os.urandom(16))))
    with pytest.raises(SettingsError, match=message) as err:
        KeyRing.load(path)
    assert str(err.value).startswith("CLINICBRIDGE_MASTER_KEY_FILE: ")
    assert key not in str(err.value)


def test_world_readable_ring_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    ring = KeyRing.load(path)
    path.chmod(0o604)
    with pytest.raises(SettingsError, match="chmod 600"):
        ring.reload()


def test_missing_file_is_not_created_when_told_not_to(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="does not exist"):
        KeyRing.load(tmp_path / "master.key", create=False)
    assert not (tmp_path / "master.key").exists()


def test_add_version_replaces_the_file_atomically_and_privately(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    ring = KeyRing.load(path)
    path.chmod(0o640)  # an operator's choice of group access is kept
    first = ring.key(1)
    assert ring.add_version() == 2 and ring.add_version() == 3
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["master.key"]  # no temp files left
    assert KeyRing.load(path).key(1) == first and ring.versions == (1, 2, 3)


def test_unknown_version_rereads_the_file_once(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    stale, other = KeyRing.load(path), KeyRing.load(path)
    other.add_version()
    assert stale.versions == (1,)
    assert stale.key(2) == other.key(2) and stale.versions == (1, 2)
    with pytest.raises(VaultError, match="master key version 9 is not in"):
        stale.key(9)


def test_concurrent_rotations_never_lose_a_version(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    KeyRing.load(path)
    rings = [KeyRing.load(path) for _ in range(6)]
    added: list[int] = []
    barrier = threading.Barrier(len(rings))

    def rotate(ring: KeyRing) -> None:
        barrier.wait()
        added.append(ring.add_version())

    threads = [threading.Thread(target=rotate, args=(ring,)) for ring in rings]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(added) == [2, 3, 4, 5, 6, 7]
    final = KeyRing.load(path)
    assert final.versions == (1, 2, 3, 4, 5, 6, 7)
    for ring, version in zip(rings, added, strict=True):
        assert final.key(version) == ring.key(version)  # each writer's key survived
