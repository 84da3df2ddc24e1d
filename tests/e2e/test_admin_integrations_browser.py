"""The integrations page in a real headless Chromium: connect Stripe (pointed at a local
fake), test the connection, receive a webhook signed by the official ``stripe`` SDK,
see it listed, and replay it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
import stripe
from playwright.sync_api import Browser, Page

from clinicbridge.integrations.registry import StoredEvent, integrations
from clinicbridge.jobs.registry import JobContext
from tests.conftest import Clinic, LiveServer
from tests.e2e.test_admin_browser import browser  # noqa: F401  (the shared Chromium)
from tests.integration.test_integrations_api import STRIPE_KEY, WHSEC, fake_stripe  # noqa: F401

pytestmark = pytest.mark.browser
PASSWORD = "correct horse battery staple"
EVENT_TYPE = "charge.e2e_replay"


class FailsOnce:
    """A domain handler that gives up on its first delivery and succeeds on replay."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, event: StoredEvent, job: JobContext) -> None:
        self.calls += 1
        if self.calls == 1:
            error = RuntimeError("ledger unavailable")
            error.retryable = False  # type: ignore[attr-defined]  # dead at once
            raise error


@pytest.fixture
def handler() -> Iterator[FailsOnce]:
    fails_once = FailsOnce()
    integrations.on("stripe", EVENT_TYPE)(fails_once)
    yield fails_once
    integrations.handlers[("stripe", EVENT_TYPE)].remove(fails_once)


def _until(page: Page, check: Callable[[], bool], *, reload: bool, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the page never showed the expected state"
        time.sleep(0.2)
        if reload:
            page.reload()


def test_connect_test_receive_and_replay(
    browser: Browser,  # noqa: F811
    live_server: LiveServer,
    clinic: Clinic,
    fake_stripe: str,  # noqa: F811
    handler: FailsOnce,
) -> None:
    with httpx.Client(base_url=live_server.url, headers=clinic.headers) as api:
        created = api.post(
            "/api/v1/users",
            json={"email": "owner@maple.example.com", "role": "owner", "password": PASSWORD},
        )
        assert created.status_code == 201

    context = browser.new_context(permissions=["clipboard-read", "clipboard-write"])
    page = context.new_page()
    page.goto(f"{live_server.url}/admin/login")
    page.get_by_label("E-mail").fill("owner@maple.example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"**/admin/tenants/{clinic.id}")
    page.get_by_role("link", name="Integrations").click()
    page.wait_for_url(f"**/admin/tenants/{clinic.id}/integrations")

    # Connect: the form is built from Stripe's schemas; secrets are password inputs.
    page.get_by_role("link", name="Connect Stripe").click()
    form = page.locator("#connect-form")
    form.get_by_label("API key").fill(STRIPE_KEY)
    form.get_by_label("Webhook secret").fill(WHSEC)
    assert form.get_by_label("API key").get_attribute("type") == "password"
    form.get_by_label("API base").fill(fake_stripe)
    form.get_by_label("Currency").fill("CAD")
    form.get_by_role("button", name="Connect Stripe").click()
    page.get_by_role("status").filter(has_text="Connected Stripe.").wait_for()
    card = page.locator("article", has=page.get_by_role("heading", name="Stripe", exact=True))
    assert STRIPE_KEY not in page.content() and WHSEC not in page.content()

    # Test connection: a real call to the fake Stripe, through the outbound client.
    card.get_by_role("button", name="Test connection").click()
    page.get_by_text("Connection test: connected").wait_for()
    card = page.locator("article", has=page.get_by_role("heading", name="Stripe", exact=True))
    assert card.locator("[data-health]").inner_text() == "healthy"

    # The webhook URL to paste into Stripe, and its copy button.
    webhook_url = card.get_by_label("Webhook URL to paste into the provider").input_value()
    assert webhook_url.startswith(f"{live_server.url}/webhooks/int_")
    card.get_by_role("button", name="Copy webhook URL").click()
    card.get_by_role("button", name="Copy webhook URL").filter(has_text="Copied").wait_for()
    assert page.evaluate("navigator.clipboard.readText()") == webhook_url

    # Stripe delivers an event, signed by Stripe's own SDK.
    body = json.dumps(
        {
            "id": "evt_e2e_1",
            "object": "event",
            "type": EVENT_TYPE,
            "created": int(time.time()),
            "data": {"object": {"id": "ch_1"}},
        }
    )
    signature = stripe.WebhookSignature.generate_signature_header(
        body, WHSEC, timestamp=int(time.time())
    )
    delivered = httpx.post(
        webhook_url,
        content=body,
        headers={"Stripe-Signature": str(signature), "Content-Type": "application/json"},
    )
    assert delivered.status_code == 200 and delivered.json()["received"] == 1

    # Reload: it is listed; the handler's first run gave up on it.
    row = page.locator("tr", has_text="evt_e2e_1")
    status = row.locator("[data-status]")
    _until(page, lambda: row.count() == 1 and status.inner_text() == "dead", reload=True)
    assert row.get_by_text("RuntimeError").is_visible()

    # Replay: queued again at once, then processed by the worker.
    row.get_by_role("button", name="Replay").click()
    page.get_by_role("status").filter(has_text="will be processed again").wait_for()
    refresh = page.get_by_role("link", name="Refresh events")

    def processed() -> bool:
        if status.inner_text() == "processed":
            return True
        refresh.click()
        return False

    _until(page, processed, reload=False)
    assert handler.calls == 2
    context.close()
