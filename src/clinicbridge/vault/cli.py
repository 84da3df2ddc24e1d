"""``clinicbridge vault``: master key versions, data key counts, master key rotation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from clinicbridge import cli_common as common

if TYPE_CHECKING:
    from clinicbridge.db.engine import Database
    from clinicbridge.vault.service import Vault

vault_app = typer.Typer(help="Encrypted credentials: master key ring.", no_args_is_help=True)


def _vault() -> Vault:
    return _open()[0]


def _open() -> tuple[Vault, Database]:
    from clinicbridge.settings import SettingsError
    from clinicbridge.vault.keyring import KeyRing
    from clinicbridge.vault.service import Vault

    settings = common.settings_or_exit()
    try:
        # Never created here: a new key file would not open existing data keys.
        keyring = KeyRing.load(settings.master_key_file, create=False)
    except SettingsError as exc:
        common.fail(str(exc))
    db = common.open_database(settings)
    common.require_current_schema(db)
    return Vault(db, keyring), db


@vault_app.command("status")
def status() -> None:
    """Print master key versions and data keys per master version as JSON."""
    from clinicbridge.settings import SettingsError

    try:
        result = _vault().status()
    except SettingsError as exc:
        common.fail(str(exc))
    data = result.to_dict()
    common.print_json(data)
    counts = ", ".join(f"v{v}: {n}" for v, n in sorted(result.data_keys_by_master_version.items()))
    typer.echo(
        f"master key v{result.active_master_version} is active "
        f"(versions in file: {', '.join(map(str, result.master_versions))}); "
        f"{result.data_keys} data keys ({counts or 'none'})",
        err=True,
    )
    if result.pending_rewrap:
        typer.echo(
            f"{result.pending_rewrap} data keys still use an older master key; "
            "run: clinicbridge vault rotate-master-key --resume",
            err=True,
        )
    if result.missing_master_versions:
        missing = ", ".join(map(str, result.missing_master_versions))
        common.fail(f"data keys need master key versions missing from the key file: {missing}", 1)


@vault_app.command("rotate-master-key")
def rotate_master_key(
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Add no key version; re-wrap data keys still on older ones (after a failure).",
        ),
    ] = False,
    batch_size: Annotated[
        int, typer.Option(min=1, max=10_000, help="Data keys per transaction.")
    ] = 100,
) -> None:
    """Add a master key version and re-wrap every data key with it, online.

    Running services keep working: sealed credentials do not change, and a
    process that meets the new version re-reads the key file.
    """
    from clinicbridge.settings import SettingsError

    vault, db = _open()
    try:
        if resume:
            result = vault.rewrap(batch_size=batch_size)
        else:
            result = vault.rotate_master_key(batch_size=batch_size)
    except SettingsError as exc:
        common.fail(str(exc))
    _audit_rotation(db, result.to_dict(), resumed=resume)
    common.print_json(result.to_dict())
    typer.echo(
        f"master key v{result.master_version} is active; re-wrapped {result.rewrapped} "
        f"data keys; {len(result.failed)} failed; {result.pending_rewrap} still on older versions",
        err=True,
    )
    if result.failed:
        raise typer.Exit(1)


def _audit_rotation(db: Database, summary: dict[str, Any], *, resumed: bool) -> None:
    """A platform audit event: which master key version is active now, and how it went."""
    from clinicbridge.audit import PLATFORM, record_system
    from clinicbridge.core.clock import SystemClock

    action = "vault.rewrap" if resumed else "vault.rotate_master_key"
    failed = bool(summary.get("failed"))
    with db.write() as session:
        record_system(
            session,
            PLATFORM,
            action,
            "master_key",
            str(summary.get("master_version")),
            now=SystemClock().now(),
            actor_id="cli",
            outcome="failure" if failed else "success",
            diff={k: v for k, v in summary.items() if k != "failed"},
        )
