"""A booking with payment over real HTTP: the app under uvicorn with its embedded worker,
the fake Stripe served on 127.0.0.1 as the integration's api_base (no transport
injected), the webhook signed by the ``stripe`` SDK; the worker confirms the booking."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import sqlalchemy as sa

from clinicbridge.db.engine import Database
from clinicbridge.jobs.models import Job
from clinicbridge.payments.lifecycle import RECEIPT_KIND
from clinicbridge.testing.stripe import FakeStripe
from tests.conftest import Clinic, LiveServer
from tests.payments_support import API, KEY, WHSEC, book, ok, post_event, shop, sign, wait_for


def test_booking_confirmed_after_the_signed_webhook_reaches_the_live_server(
    live_server: LiveServer, make_clinic: Callable[..., Clinic], db: Database
) -> None:
    fake = FakeStripe(api_key=KEY, webhook_secret=WHSEC)
    clinic = make_clinic()
    with fake.serve() as stripe_url, httpx.Client(base_url=live_server.url, timeout=10) as client:
        s = shop(client, clinic, api_base=stripe_url)  # type: ignore[arg-type]
        made = ok(book(client, s), 201)  # type: ignore[arg-type]
        assert made["status"] == "pending_payment"
        intent = fake.get(made["payment"]["stripe_payment_intent_id"])
        assert intent["client_secret"] == made["payment"]["client_secret"]
        fake.confirm(intent["id"], "pm_card_visa")
        for body, header in fake.deliveries(sign):
            post_event(client, s.integration, body, header)  # type: ignore[arg-type]

        def confirmed() -> bool:
            got = client.get(f"{API}/bookings/{made['id']}", headers=clinic.headers).json()
            return bool(got["status"] == "confirmed")

        wait_for(confirmed, timeout=15)
        balance = ok(client.get(f"{API}/patients/{s.patient}/balance", headers=clinic.headers))
        assert balance == {"balance": -2500, "currency": "cad"}

        def receipt_job_done() -> bool:
            with db.read() as session:
                states = session.scalars(sa.select(Job.state).where(Job.kind == RECEIPT_KIND))
                return list(states) == ["succeeded"]

        wait_for(receipt_job_done, timeout=15)
    assert len(fake.of_type("payment_intent")) == 1
