"""The ``clinicbridge`` command line.

Heavy modules (FastAPI, SQLAlchemy) are imported inside the commands so that
``clinicbridge --help`` answers at once.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

if TYPE_CHECKING:
    from clinicbridge.core.context import Ctx
    from clinicbridge.db.engine import Database
    from clinicbridge.settings import Settings

app = typer.Typer(
    help="ClinicBridge: the integration hub for clinics.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
tenant_app = typer.Typer(help="Clinics (tenants).", no_args_is_help=True)
user_app = typer.Typer(help="Staff users.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(tenant_app, name="tenant")
app.add_typer(user_app, name="user")


def _fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _settings(*, need_master_key: bool = False, **overrides: object) -> Settings:
    from clinicbridge.settings import SettingsError, load_master_key, load_settings

    try:
        settings = load_settings(**overrides)
        if need_master_key:
            load_master_key(settings.master_key_file)
    except SettingsError as exc:
        _fail(str(exc))
    return settings


def _database(settings: Settings) -> Database:
    from clinicbridge.db.engine import create_database

    return create_database(settings.database_url, pool_size=2)


def _require_current_schema(db: Database) -> None:
    from clinicbridge.db.migrate import current_revision, head_revision

    with db.engine.connect() as conn:
        if current_revision(conn) != head_revision():
            _fail("the database schema is not current; run: clinicbridge db upgrade")


def _system_ctx(tenant_id: str) -> Ctx:
    from clinicbridge.core.clock import SystemClock
    from clinicbridge.core.context import Ctx
    from clinicbridge.core.rbac import BUILTIN_ROLES

    return Ctx(
        tenant_id=tenant_id,
        actor_type="system",
        actor_id="cli",
        role="owner",
        permissions=BUILTIN_ROLES["owner"],
        now=SystemClock().now(),
    )


def _print_json(data: object) -> None:
    sys.stdout.write(json.dumps(data) + "\n")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    no_worker: Annotated[
        bool, typer.Option("--no-worker", help="Serve the API only; run workers separately.")
    ] = False,
) -> None:
    """Run the HTTP API (and, unless --no-worker, an in-process worker)."""
    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = _settings(need_master_key=True, **overrides)
    import uvicorn

    from clinicbridge.app import create_app
    from clinicbridge.core.logs import configure_logging

    configure_logging(settings.log_level)
    _require_current_schema(_database(settings))
    application = create_app(settings, embedded_worker=not no_worker)
    uvicorn.run(
        application,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        server_header=False,
    )


@app.command()
def worker() -> None:
    """Run a worker process (for scale-out next to `serve --no-worker`)."""
    import signal

    from clinicbridge.core.clock import SystemClock
    from clinicbridge.core.logs import configure_logging
    from clinicbridge.jobs.worker import Worker

    settings = _settings(need_master_key=True)
    configure_logging(settings.log_level)
    db = _database(settings)
    _require_current_schema(db)
    the_worker = Worker(db, SystemClock(), heartbeat_seconds=settings.worker_heartbeat_seconds)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: the_worker.stop())
    the_worker.run()


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    from clinicbridge.db.migrate import current_revision, upgrade

    db = _database(_settings())
    upgrade(db.engine, revision)
    with db.engine.connect() as conn:
        typer.echo(f"database at revision {current_revision(conn)}", err=True)


@db_app.command("current")
def db_current() -> None:
    """Print the database's revision and whether it is the newest."""
    from clinicbridge.db.migrate import current_revision, head_revision

    db = _database(_settings())
    with db.engine.connect() as conn:
        current = current_revision(conn)
    head = head_revision()
    state = "(head)" if current == head else f"(behind head {head})"
    typer.echo(f"{current or 'empty'} {state}")
    if current != head:
        raise typer.Exit(1)


@tenant_app.command("create")
def tenant_create(
    name: Annotated[str, typer.Option(help="The clinic's name.")],
    timezone: Annotated[str, typer.Option(help="IANA time zone.")] = "UTC",
    language: Annotated[str, typer.Option(help="Default BCP 47 language.")] = "en",
    currency: Annotated[str, typer.Option(help="ISO 4217 currency.")] = "USD",
    slug: Annotated[str | None, typer.Option(help="Short name (default: from the name).")] = None,
) -> None:
    """Create a clinic and print {"tenant_id", "api_key"} (an owner key) as JSON."""
    from clinicbridge.core.api_keys import issue_key
    from clinicbridge.core.tenancy import create_tenant

    db = _database(_settings())
    _require_current_schema(db)
    ctx = _system_ctx("")
    try:
        with db.write() as session:
            tenant = create_tenant(
                session,
                name=name,
                now=ctx.now,
                timezone=timezone,
                default_language=language,
                currency=currency,
                slug=slug,
            )
            _, raw = issue_key(
                session,
                tenant_id=tenant.id,
                name="owner (cli)",
                role="owner",
                now=ctx.now,
                created_by=None,
            )
            tenant_id = tenant.id
    except ValueError as exc:
        _fail(str(exc))
    _print_json({"tenant_id": tenant_id, "api_key": raw})


@tenant_app.command("list")
def tenant_list() -> None:
    """List clinics as JSON lines."""
    from clinicbridge.core.tenancy import list_tenants

    db = _database(_settings())
    with db.read() as session:
        for t in list_tenants(session):
            _print_json({"id": t.id, "slug": t.slug, "name": t.name, "timezone": t.timezone})


@user_app.command("create")
def user_create(
    tenant: Annotated[str, typer.Option(help="Clinic id (ten_...).")],
    email: Annotated[str, typer.Option(help="Sign-in e-mail.")],
    role: Annotated[str, typer.Option(help="Role name, e.g. admin or front_desk.")],
    name: Annotated[str, typer.Option(help="Display name.")] = "",
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
) -> None:
    """Create a staff user; prints the user as JSON (with a generated password if none given)."""
    from pydantic import ValidationError

    from clinicbridge.core.errors import ClinicBridgeError, InvalidInputError
    from clinicbridge.core.schemas import UserCreate
    from clinicbridge.core.tenancy import get_tenant
    from clinicbridge.core.users import create_user

    password = sys.stdin.readline().rstrip("\n") if password_stdin else None
    try:
        data = UserCreate(email=email, role=role, display_name=name, password=password)
    except ValidationError as exc:
        err = exc.errors()[0]
        _fail(f"--{err['loc'][0]}: {err['msg']}")
    db = _database(_settings())
    _require_current_schema(db)
    try:
        with db.write() as session:
            get_tenant(session, tenant)
            user, generated = create_user(session, _system_ctx(tenant), data)
            out = {"user_id": user.id, "email": user.email, "role": user.role}
    except InvalidInputError as exc:
        _fail("; ".join(f"--{e.field}: {e.message}" for e in exc.errors))
    except ClinicBridgeError as exc:
        _fail(exc.detail, 1)
    if generated:
        out["password"] = generated
    _print_json(out)


@app.command()
def demo() -> None:
    """Create (or refresh) the demo clinic; print {"tenant_id", "api_key"} as JSON.

    Safe to run again: the clinic is reused; its demo key and the demo owner's
    password are replaced, and printed once.
    """
    from clinicbridge.demo import ensure_demo

    settings = _settings()
    db = _database(settings)
    _require_current_schema(db)
    result = ensure_demo(db)
    base = settings.public_base_url
    typer.echo(
        f"Demo clinic ready.\n  Admin:    {base}/admin\n"
        f"  Sign in:  {result.owner_email} / {result.owner_password}\n"
        f"  API key:  {result.api_key}\n  API docs: {base}/docs",
        err=True,
    )
    _print_json({"tenant_id": result.tenant_id, "api_key": result.api_key})


def main() -> None:
    app()


if __name__ == "__main__":
    main()
