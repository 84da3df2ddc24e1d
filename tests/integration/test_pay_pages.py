"""The pages Stripe Checkout sends a patient back to: they render for a paid, an open,
an unknown and a malformed payment, show the clinic's name at most, and never the
patient, the amount or the service."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from clinicbridge.db.engine import Database
from clinicbridge.settings import Settings
from clinicbridge.testing.stripe import FakeStripe
from tests.conftest import Clinic
from tests.payments_support import book, fake, ok, paid_booking, shop

__all__ = ["fake"]
PRIVATE = ("Hélène", "Tremblay", "helene", "Physiotherapy", "90.00", "90,00", "25.00", "25,00")


def _clean(html: str) -> None:
    for word in PRIVATE:
        assert word not in html, word


@pytest.fixture
def paid_and_open(
    client: TestClient, clinic: Clinic, fake: FakeStripe, db: Database, settings: Settings
) -> tuple[str, str]:
    s = shop(client, clinic)
    paid = paid_booking(client, fake, db, settings, s)["payment"]["id"]
    pending = ok(book(client, s, 1, payment_method="link"), 201)["payment"]["id"]
    return str(paid), str(pending)


def test_done_says_received_or_being_confirmed(
    client: TestClient, paid_and_open: tuple[str, str]
) -> None:
    paid, pending = paid_and_open
    page = client.get(f"/pay/done?payment={paid}")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "Payment received" in page.text and "Maple Family Clinic" in page.text
    assert page.headers["cache-control"] == "no-store"
    assert "noindex" in page.headers["x-robots-tag"]
    _clean(page.text)
    waiting = client.get(f"/pay/done?payment={pending}")
    assert waiting.status_code == 200 and "being confirmed" in waiting.text
    assert "Payment received" not in waiting.text
    _clean(waiting.text)


def test_cancelled_says_nothing_was_charged(
    client: TestClient, paid_and_open: tuple[str, str]
) -> None:
    _, pending = paid_and_open
    page = client.get(f"/pay/cancelled?payment={pending}")
    assert page.status_code == 200
    assert "not completed" in page.text and "nothing was charged" in page.text
    assert "Maple Family Clinic" in page.text
    _clean(page.text)


@pytest.mark.parametrize("query", ["", "?payment=pay_unknown000000000000000000", "?payment=<x>"])
def test_unknown_payment_gets_the_generic_page(client: TestClient, query: str) -> None:
    for path in ("/pay/done", "/pay/cancelled"):
        page = client.get(path + query)
        assert page.status_code == 200
        assert "Maple" not in page.text and "<x>" not in page.text
        assert 'class="clinic"' not in page.text
