"""Helpers shared by every command group of the ``clinicbridge`` CLI.

Kept free of heavy imports so that ``clinicbridge --help`` stays fast.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, NoReturn

import typer

if TYPE_CHECKING:
    from clinicbridge.core.context import Ctx
    from clinicbridge.db.engine import Database
    from clinicbridge.settings import Settings


def fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def settings_or_exit(*, need_master_key: bool = False, **overrides: object) -> Settings:
    from clinicbridge.settings import SettingsError, load_master_key, load_settings

    try:
        settings = load_settings(**overrides)
        if need_master_key:
            load_master_key(settings.master_key_file)
    except SettingsError as exc:
        fail(str(exc))
    return settings


def open_database(settings: Settings) -> Database:
    from clinicbridge.db.engine import create_database

    return create_database(settings.database_url, pool_size=2)


def require_current_schema(db: Database) -> None:
    from clinicbridge.db.migrate import current_revision, head_revision

    with db.engine.connect() as conn:
        if current_revision(conn) != head_revision():
            fail("the database schema is not current; run: clinicbridge db upgrade")


def system_ctx(tenant_id: str) -> Ctx:
    from clinicbridge.core.clock import SystemClock
    from clinicbridge.core.context import Ctx
    from clinicbridge.core.rbac import BUILTIN_ROLES

    return Ctx.system(
        tenant_id, "cli", SystemClock().now(), role="owner", permissions=BUILTIN_ROLES["owner"]
    )


def print_json(data: object) -> None:
    sys.stdout.write(json.dumps(data) + "\n")
