"""Refund with two-person approval in a real headless Chromium, against the live server
(its own worker) and the fake Stripe served on 127.0.0.1: a patient's payment made
through Stripe and its signed webhook; staff member A asks for a refund above the
clinic's threshold (it waits); A cannot approve it; staff member B signs in and
approves it; the refund reaches Stripe, Stripe's signed ``charge.refunded`` comes
back, and the patient's balance page shows the refund in the ledger."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from clinicbridge.testing.stripe import FakeStripe
from tests.conftest import Clinic, LiveServer
from tests.e2e.test_admin_browser import browser  # noqa: F401  (the shared Chromium)
from tests.payments_support import API, KEY, WHSEC, book, ok, post_event, shop, sign, wait_for

pytestmark = pytest.mark.browser
PASSWORD = "correct horse battery staple"
ANA, BEN = "ana@maple.example.com", "ben@maple.example.com"


def _sign_in(chromium: Browser, server: LiveServer, clinic: Clinic, email: str) -> BrowserContext:
    context = chromium.new_context()
    page = context.new_page()
    page.goto(f"{server.url}/admin/login")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"**/admin/tenants/{clinic.id}")
    return context


def _until(page: Page, check: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the page never showed the expected state"
        time.sleep(0.2)
        page.reload()


def test_refund_needs_a_second_person_and_lands_in_the_ledger(
    browser: Browser,  # noqa: F811
    live_server: LiveServer,
    make_clinic: Callable[..., Clinic],
) -> None:
    fake = FakeStripe(api_key=KEY, webhook_secret=WHSEC)
    clinic = make_clinic()
    with fake.serve() as stripe_url, httpx.Client(base_url=live_server.url, timeout=10) as api:
        for email in (ANA, BEN):
            body = {"email": email, "role": "billing", "password": PASSWORD}
            ok(api.post(f"{API}/users", json=body, headers=clinic.headers), 201)
        s = shop(api, clinic, api_base=stripe_url)  # type: ignore[arg-type]
        threshold = {"refund_approval_threshold": 5000}
        ok(api.patch(f"{API}/billing/settings", json=threshold, headers=clinic.headers))
        made = ok(book(api, s, payment="full"), 201)  # type: ignore[arg-type]
        fake.confirm(made["payment"]["stripe_payment_intent_id"], "pm_card_visa")
        for event, header in fake.deliveries(sign):
            post_event(api, s.integration, event, header)  # type: ignore[arg-type]
        payment_id = made["payment"]["id"]

        def paid() -> bool:
            got = ok(api.get(f"{API}/payments/{payment_id}", headers=clinic.headers))
            return bool(got["status"] == "succeeded")

        wait_for(paid, timeout=15)

        # A asks for 60.00 of the 90.00: above the 50.00 threshold, it waits.
        ana = _sign_in(browser, live_server, clinic, ANA)
        page = ana.pages[0]
        page.get_by_role("navigation", name="Clinic").get_by_role("link", name="Payments").click()
        page.wait_for_url(f"**/admin/tenants/{clinic.id}/payments")
        row = page.locator(f'tr[data-payment-id="{payment_id}"]')
        expect(row.locator("[data-status]")).to_have_text("succeeded")
        row.locator("summary").click()  # opens the form
        row.get_by_label("Amount").fill("60.00")
        row.get_by_label("Reason").fill("Session cancelled by the clinic")
        row.get_by_role("button", name="Request refund").click()
        page.get_by_role("status").filter(has_text="waiting for approval").wait_for()
        page.get_by_role("navigation", name="Clinic").get_by_role("link", name="Refunds").click()
        page.wait_for_url(f"**/admin/tenants/{clinic.id}/refunds")
        refund_row = page.locator("tr", has_text="Session cancelled by the clinic")
        expect(refund_row.locator("[data-status]")).to_have_text("pending approval")
        expect(refund_row.get_by_text("Waiting for a second person")).to_be_visible()
        expect(refund_row.get_by_role("button", name="Approve")).to_have_count(0)
        assert fake.calls("POST", "/v1/refunds") == []

        # B approves: the refund goes to Stripe.
        ben = _sign_in(browser, live_server, clinic, BEN)
        page_b = ben.pages[0]
        page_b.goto(f"{live_server.url}/admin/tenants/{clinic.id}/refunds")
        row_b = page_b.locator("tr", has_text="Session cancelled by the clinic")
        expect(row_b.get_by_text(ANA)).to_be_visible()
        row_b.get_by_role("button", name="Approve").click()
        page_b.get_by_role("status").filter(has_text="approved and sent to Stripe").wait_for()
        row_b = page_b.locator("tr", has_text="Session cancelled by the clinic")
        expect(row_b.locator("[data-status]")).to_have_text("succeeded")
        expect(row_b.get_by_text(BEN)).to_be_visible()
        [sent] = fake.calls("POST", "/v1/refunds")
        assert sent.params["amount"] == "6000"

        # Stripe's signed charge.refunded: the worker books it; the balance page shows it.
        deliveries = fake.deliveries(sign, types=frozenset({"charge.refunded"}))
        assert len(deliveries) == 1
        for event, header in deliveries:
            post_event(api, s.integration, event, header)  # type: ignore[arg-type]
        page_b.goto(f"{live_server.url}/admin/tenants/{clinic.id}/payments")
        page_b.locator(f'tr[data-payment-id="{payment_id}"]').get_by_role(
            "link", name=s.patient
        ).click()
        page_b.wait_for_url(f"**/patients/{s.patient}/balance")
        refund_entry = page_b.locator('#ledger tr[data-kind="refund"]')
        _until(page_b, lambda: refund_entry.count() == 1)
        expect(refund_entry.locator("[data-amount]")).to_have_text("CA$60.00")
        expect(page_b.locator("#balance")).to_have_attribute("data-balance", "-3000")
        ana.close()
        ben.close()
