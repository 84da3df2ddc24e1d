"""The vault against a real database: data keys, sealing, rotation, concurrency."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from clinicbridge.core.errors import DecryptionError, NotFoundError
from clinicbridge.core.secrets import REGISTRY, Secret
from clinicbridge.db.engine import Database, create_database
from clinicbridge.vault import KeyRing, Vault
from clinicbridge.vault.models import DataKey
from tests.conftest import Clinic

MakeVault = Callable[..., Vault]


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    return tmp_path / "master.key"


@pytest.fixture
def make_vault(db: Database, key_file: Path) -> MakeVault:
    """A new Vault (a process of its own, as far as caches go) on the shared key file."""

    def factory(path: Path = key_file, database: Database = db) -> Vault:
        return Vault(database, KeyRing.load(path))

    return factory


def credentials() -> dict[str, str]:
    return {
        "api_key": "sk_live_" + secrets.token_urlsafe(24),
        "webhook_secret": "whsec_" + secrets.token_urlsafe(24),
        "account_sid": "AC" + secrets.token_hex(16),
        "auth_token": secrets.token_hex(16),
    }


def revealed(opened: dict[str, Secret]) -> dict[str, str]:
    return {name: value.reveal() for name, value in opened.items()}


def data_keys(db: Database) -> list[DataKey]:
    with db.read() as session:
        return list(session.scalars(sa.select(DataKey).order_by(DataKey.tenant_id)))


def test_round_trip_creates_one_data_key(
    make_vault: MakeVault, make_clinic: Callable[..., Clinic], db: Database
) -> None:
    clinic, vault, creds = make_clinic(), make_vault(), credentials()
    sealed = vault.seal(None, clinic.id, "int_stripe", {**creds, "extra": Secret("xyz-secret")})
    assert all(v.startswith("cb1:1:") for v in sealed.values())
    assert not any(plain in "".join(sealed.values()) for plain in creds.values())
    opened = vault.open(clinic.id, "int_stripe", sealed)
    assert revealed(opened) == {**creds, "extra": "xyz-secret"}
    assert (
        revealed(make_vault().open(clinic.id, "int_stripe", sealed))["api_key"] == creds["api_key"]
    )
    assert (
        vault.decrypt_field(clinic.id, "int_stripe", "api_key", sealed["api_key"]).reveal()
        == (creds["api_key"])
    )
    single = vault.encrypt_field(None, clinic.id, "int_stripe", "pin", "123456")
    assert vault.decrypt_field(clinic.id, "int_stripe", "pin", single).reveal() == "123456"
    [key] = data_keys(db)
    assert (key.tenant_id, key.version, key.master_version) == (clinic.id, 1, 1)
    assert key.rewrapped_at is None
    assert REGISTRY.find(f"x {creds['auth_token']} x") == [creds["auth_token"]]  # redactable


def test_moved_or_tampered_ciphertext_does_not_decrypt(
    make_vault: MakeVault, make_clinic: Callable[..., Clinic]
) -> None:
    maple, birch = make_clinic("Maple"), make_clinic("Birch")
    vault, creds = make_vault(), credentials()
    sealed = vault.seal(None, maple.id, "int_1", creds)
    vault.seal(None, birch.id, "int_1", {"api_key": "other-clinic-key"})
    token = sealed["api_key"]
    body = token.split(":")[2]
    tampered = f"cb1:1:{body[:-6]}{'A' if body[-6] != 'A' else 'B'}{body[-5:]}"
    for tenant, integration, field, value in (
        (maple.id, "int_1", "auth_token", token),  # another field of the same row
        (maple.id, "int_2", "api_key", token),  # another integration
        (birch.id, "int_1", "api_key", token),  # another clinic
        (maple.id, "int_1", "api_key", tampered),
        (maple.id, "int_1", "api_key", "cb1:7:" + body),  # a data key that does not exist
        (maple.id, "int_1", "api_key", "not sealed"),
    ):
        with pytest.raises(DecryptionError) as err:
            vault.decrypt_field(tenant, integration, field, value)
        assert creds["api_key"] not in str(err.value) and body not in str(err.value)
        assert field in str(err.value)


def test_wrong_master_key_does_not_decrypt(
    make_vault: MakeVault, make_clinic: Callable[..., Clinic], tmp_path: Path
) -> None:
    clinic = make_clinic()
    sealed = make_vault().seal(None, clinic.id, "int_1", credentials())
    impostor = make_vault(tmp_path / "other" / "master.key")
    with pytest.raises(DecryptionError, match="does not unwrap with master key version 1"):
        impostor.open(clinic.id, "int_1", sealed)


def test_unknown_clinic_is_not_found(make_vault: MakeVault) -> None:
    with pytest.raises(NotFoundError):
        make_vault().seal(None, "ten_01JD3ABCDEFGHJKMNPQRSTVWXY", "int_1", {"k": "value123"})


def test_sealing_inside_a_transaction_that_rolls_back(
    make_vault: MakeVault, make_clinic: Callable[..., Clinic], db: Database
) -> None:
    clinic, vault = make_clinic(), make_vault()
    with pytest.raises(RuntimeError), db.write() as session:
        inside = vault.seal(session, clinic.id, "int_1", {"api_key": "first-value"})
        assert vault.open(clinic.id, "int_1", inside, session=session)["api_key"].reveal() == (
            "first-value"
        )
        raise RuntimeError("the caller's write fails")
    assert data_keys(db) == []
    # The rolled-back data key must not linger in the cache.
    sealed = vault.seal(None, clinic.id, "int_1", {"api_key": "second-value"})
    assert make_vault().open(clinic.id, "int_1", sealed)["api_key"].reveal() == "second-value"
    with db.write() as session:
        again = vault.seal(session, clinic.id, "int_1", {"api_key": "third-value"})
    assert make_vault().open(clinic.id, "int_1", again)["api_key"].reveal() == "third-value"
    assert len(data_keys(db)) == 1


def test_rotation_rewraps_every_data_key_and_old_values_still_open(
    make_vault: MakeVault, make_clinic: Callable[..., Clinic], db: Database
) -> None:
    vault = make_vault()
    clinics = [make_clinic(f"Clinic {i}") for i in range(5)]
    sealed = {c.id: vault.seal(None, c.id, "int_1", credentials()) for c in clinics}
    plain = {c.id: revealed(vault.open(c.id, "int_1", sealed[c.id])) for c in clinics}
    before = vault.status()
    assert (before.active_master_version, before.data_keys_by_master_version) == (1, {1: 5})
    assert (before.data_keys, before.clinics_with_keys, before.pending_rewrap) == (5, 5, 0)
    wrapped_before = {k.tenant_id: k.wrapped_key for k in data_keys(db)}

    result = vault.rotate_master_key(batch_size=2)  # several short transactions

    assert (result.previous_master_version, result.master_version) == (1, 2)
    assert (result.rewrapped, result.failed, result.pending_rewrap) == (5, (), 0)
    after = vault.status()
    assert after.master_versions == (1, 2) and after.data_keys_by_master_version == {2: 5}
    for key in data_keys(db):
        assert key.master_version == 2 and key.rewrapped_at is not None
        assert key.wrapped_key != wrapped_before[key.tenant_id]
    for opener in (vault, make_vault()):
        for c in clinics:
            assert revealed(opener.open(c.id, "int_1", sealed[c.id])) == plain[c.id]


def test_processes_with_the_old_ring_reread_the_key_file(
    make_vault: MakeVault, make_clinic: Callable[..., Clinic]
) -> None:
    rotator = make_vault()
    maple, birch = make_clinic("Maple"), make_clinic("Birch")
    sealed = rotator.seal(None, maple.id, "int_1", {"api_key": "maple-api-key"})
    reader, creator = make_vault(), make_vault()  # both know master version 1 only
    rotator.rotate_master_key()
    # Maple's data key is now wrapped by version 2, which `reader` never saw.
    assert reader.open(maple.id, "int_1", sealed)["api_key"].reveal() == "maple-api-key"
    # A data key `creator` makes is wrapped by the newest version, not its stale one.
    creator.seal(None, birch.id, "int_1", {"api_key": "birch-api-key"})
    assert rotator.status().data_keys_by_master_version == {2: 2}


def test_rewrap_finishes_a_stopped_rotation_and_reports_failures(
    make_vault: MakeVault, make_clinic: Callable[..., Clinic], db: Database, key_file: Path
) -> None:
    vault = make_vault()
    good, broken = make_clinic("Good"), make_clinic("Broken")
    sealed = vault.seal(None, good.id, "int_1", {"api_key": "good-api-key"})
    vault.seal(None, broken.id, "int_1", {"api_key": "broken-api-key"})
    KeyRing.load(key_file).add_version()  # a rotation that stopped after adding its key
    with db.write() as session:
        session.execute(
            sa.update(DataKey).where(DataKey.tenant_id == broken.id).values(wrapped_key=b"x" * 60)
        )
    assert vault.status().pending_rewrap == 2

    result = vault.rewrap()

    assert (result.master_version, result.rewrapped) == (2, 1)
    assert result.failed == ((broken.id, 1),) and result.pending_rewrap == 1
    assert make_vault().open(good.id, "int_1", sealed)["api_key"].reveal() == "good-api-key"


def test_concurrent_first_use_creates_one_data_key(
    make_clinic: Callable[..., Clinic], database_url: str, key_file: Path, db: Database
) -> None:
    clinic = make_clinic()
    KeyRing.load(key_file)
    workers = 6
    databases = [create_database(database_url, pool_size=1) for _ in range(workers)]
    vaults = [Vault(d, KeyRing.load(key_file)) for d in databases]
    barrier = threading.Barrier(workers)
    sealed: dict[int, dict[str, str]] = {}

    def first_use(i: int) -> None:
        barrier.wait()
        sealed[i] = vaults[i].seal(None, clinic.id, "int_1", {"api_key": f"value-number-{i}"})

    threads = [threading.Thread(target=first_use, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert len(sealed) == workers
        assert len(data_keys(db)) == 1
        for reader in vaults:  # every process opens what every other sealed
            for i, values in sealed.items():
                assert reader.open(clinic.id, "int_1", values)["api_key"].reveal() == (
                    f"value-number-{i}"
                )
    finally:
        for database in databases:
            database.dispose()
