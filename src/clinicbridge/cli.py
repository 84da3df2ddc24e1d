"""The ``clinicbridge`` command line.

Heavy modules (FastAPI, SQLAlchemy) are imported inside the commands so that
``clinicbridge --help`` answers at once.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from clinicbridge import cli_common
from clinicbridge.audit.cli import audit_app
from clinicbridge.jobs.cli import jobs_app
from clinicbridge.messaging.reminders_cli import reminders_app
from clinicbridge.vault.cli import vault_app
from clinicbridge.voice.cli import voice_app
from clinicbridge.webhooks.cli import webhooks_app

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
app.add_typer(jobs_app, name="jobs")
app.add_typer(webhooks_app, name="webhooks")
app.add_typer(vault_app, name="vault")
app.add_typer(audit_app, name="audit")
app.add_typer(voice_app, name="voice")
app.add_typer(reminders_app, name="reminders")


# Shared with the command groups of other packages (jobs, vault, audit).
_fail = cli_common.fail
_settings = cli_common.settings_or_exit
_database = cli_common.open_database
_require_current_schema = cli_common.require_current_schema
_system_ctx = cli_common.system_ctx
_print_json = cli_common.print_json


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
def worker(
    queue: Annotated[
        list[str] | None, typer.Option("--queue", help="Queue to work (repeatable).")
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, max=256, help="Handler threads.")] = 4,
    load: Annotated[
        list[str] | None,
        typer.Option("--import", help="Module that registers job handlers (repeatable)."),
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus metrics on this port.")
    ] = None,
    lease_seconds: Annotated[
        float, typer.Option(min=1, help="A job whose worker is silent this long is re-run.")
    ] = 30.0,
    batch_size: Annotated[
        int, typer.Option(min=1, max=10_000, help="Jobs claimed and recorded per statement.")
    ] = 100,
) -> None:
    """Run a worker process (for scale-out next to `serve --no-worker`). SIGTERM stops it
    gracefully: no new claims, running jobs finish or are given back."""
    import importlib
    import signal
    import threading
    from datetime import timedelta

    from clinicbridge import handlers  # noqa: F401  (the application's job handlers)
    from clinicbridge.core.clock import SystemClock
    from clinicbridge.core.logs import configure_logging
    from clinicbridge.core.metrics import Metrics
    from clinicbridge.db.engine import WalCheckpointer
    from clinicbridge.jobs.worker import Worker, WorkerConfig

    # Signals go to one waiting thread (see below): block them before any thread starts.
    signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    settings = _settings(need_master_key=True)
    configure_logging(settings.log_level)
    for module in load or []:
        importlib.import_module(module)
    db = _database(settings)
    _require_current_schema(db)
    metrics = Metrics()
    if metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr=settings.host, registry=metrics.registry)
    config = WorkerConfig(
        queues=tuple(queue or ["default"]),
        concurrency=concurrency,
        batch_size=batch_size,
        lease=timedelta(seconds=lease_seconds),
        heartbeat_seconds=min(settings.worker_heartbeat_seconds, lease_seconds / 3),
    )
    the_worker = Worker(db, SystemClock(), config=config, metrics=metrics, settings=settings)
    # The worker runs in a thread and another thread waits for SIGTERM/SIGINT: a
    # Python signal handler calling stop() could deadlock on a lock the loop holds.
    checkpointer = WalCheckpointer(db)
    checkpointer.start()
    thread = threading.Thread(target=the_worker.run, name="clinicbridge-worker")
    thread.start()

    def stop_on_signal() -> None:
        signal.sigwait(signals)
        the_worker.stop()

    threading.Thread(target=stop_on_signal, daemon=True).start()
    thread.join()
    checkpointer.stop()


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
    from clinicbridge.audit import record
    from clinicbridge.core.api_keys import created_key_diff, issue_key
    from clinicbridge.core.tenancy import create_tenant, created_tenant_diff

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
            key, raw = issue_key(
                session,
                tenant_id=tenant.id,
                name="owner (cli)",
                role="owner",
                now=ctx.now,
                created_by=None,
            )
            tenant_id = tenant.id
            as_system = _system_ctx(tenant_id)
            record(
                session,
                as_system,
                "tenant.create",
                "tenant",
                tenant_id,
                diff=created_tenant_diff(tenant),
            )
            record(
                session, as_system, "api_key.create", "api_key", key.id, diff=created_key_diff(key)
            )
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
