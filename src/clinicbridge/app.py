"""The FastAPI application factory."""

from __future__ import annotations

import functools
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from starlette.routing import BaseRoute

from clinicbridge import (
    __version__,
    handlers,  # noqa: F401  (registers job handlers)
)
from clinicbridge.api import (
    api_v1_router,
    booking_links,
    calendars,
    health,
    ical_feed,
    public_booking,
    receipt_links,
    voice_inbox,
    webhook_inbox,
)
from clinicbridge.api.deps import check_permissions
from clinicbridge.api.middleware import PublicCorsMiddleware, RequestMiddleware
from clinicbridge.api.problems import install_problem_handlers
from clinicbridge.core.clock import Clock, SystemClock
from clinicbridge.core.idempotency import ResponseCipher
from clinicbridge.core.metrics import Metrics
from clinicbridge.db.engine import Database, WalCheckpointer, create_database
from clinicbridge.db.migrate import head_revision
from clinicbridge.jobs.worker import Worker, WorkerConfig, WorkerThread
from clinicbridge.settings import Settings, load_master_key
from clinicbridge.voice import dates as voice_dates
from clinicbridge.web import auth as web_auth
from clinicbridge.web import billing as web_billing
from clinicbridge.web import calendars as web_calendars
from clinicbridge.web import conversations as web_conversations
from clinicbridge.web import integrations as web_integrations
from clinicbridge.web import invoices as web_invoices
from clinicbridge.web import messages as web_messages
from clinicbridge.web import pay_pages, payout_pages
from clinicbridge.web import reminder_rules as web_reminder_rules
from clinicbridge.web import routes as web_routes

API_DESCRIPTION = """\
ClinicBridge connects a clinic's outside services: payments, messaging, calendars, EHRs.

Authenticate with `Authorization: Bearer cb_live_...`. Errors are RFC 9457
`application/problem+json`. Lists take `limit` and `starting_after`. POST honours
`Idempotency-Key` for 24 hours.
"""


@functools.cache
def _routes() -> tuple[BaseRoute, ...]:
    router = APIRouter()
    for part in (
        health.router,
        api_v1_router(),
        webhook_inbox.router,
        voice_inbox.router,
        public_booking.router,
        booking_links.router,
        ical_feed.router,
        receipt_links.router,
        calendars.callback_router,
        web_routes.router,
        web_integrations.router,
        web_messages.router,
        web_conversations.router,
        web_reminder_rules.router,
        web_calendars.router,
        web_billing.router,
        web_invoices.router,
        pay_pages.router,
        payout_pages.router,
    ):
        router.include_router(part)
    return tuple(router.routes)


def create_app(
    settings: Settings,
    *,
    db: Database | None = None,
    clock: Clock | None = None,
    embedded_worker: bool = False,
) -> FastAPI:
    database = db or create_database(settings.database_url)
    the_clock = clock or SystemClock()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        checkpointer = WalCheckpointer(database)
        checkpointer.start()
        # Load the voice tools' date parser off the request path (once per process).
        threading.Thread(target=voice_dates.warm, name="warm-dateparser", daemon=True).start()
        worker = None
        if embedded_worker:
            config = WorkerConfig(heartbeat_seconds=settings.worker_heartbeat_seconds)
            worker = WorkerThread(
                Worker(database, the_clock, config=config, metrics=metrics, settings=settings)
            )
            worker.start()
        try:
            yield
        finally:
            if worker is not None:
                worker.stop()
            checkpointer.stop()
            if db is None:
                database.dispose()

    app = FastAPI(
        title="ClinicBridge",
        version=__version__,
        description=API_DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.db = database
    app.state.clock = the_clock
    app.state.metrics = metrics
    app.state.migration_head = head_revision()
    app.state.idempotency_cipher = ResponseCipher(load_master_key(settings.master_key_file))

    install_problem_handlers(app)
    app.add_exception_handler(web_auth.LoginRequired, web_routes.on_login_required)
    # The route table is built once per process and shared by every app: FastAPI's
    # route building is the bulk of create_app's cost (about 0.3 s on this service). Shared
    # routes know no app, so app.dependency_overrides does not reach them (nothing uses it).
    app.router.routes.extend(_routes())
    app.mount("/admin/static", web_routes.static_files(), name="admin-static")
    app.add_middleware(RequestMiddleware, max_body_bytes=settings.max_body_bytes, metrics=metrics)
    app.add_middleware(PublicCorsMiddleware)
    check_permissions(app, web_routes.is_web_path)
    return app
