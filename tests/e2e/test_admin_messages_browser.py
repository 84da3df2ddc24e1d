"""The templates and messages pages in a real headless Chromium: edit the English
booking confirmation e-mail's subject, watch the live preview, save, send a test to a
local SMTP server (aiosmtpd) through the clinic's smtp integration, and see the test
message reach "sent" on the messages page (sent by the live server's own worker)."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from clinicbridge.messaging import clinic_templates
from tests.conftest import Clinic, LiveServer
from tests.e2e.test_admin_browser import browser  # noqa: F401  (the shared Chromium)
from tests.integration.test_messages import _email_integration, smtp  # noqa: F401
from tests.integration.test_smtp import Server

pytestmark = pytest.mark.browser
PASSWORD = "correct horse battery staple"
KIND = "booking.confirmation"
SUBJECT = "Your visit on {{ booking.start_text }} at {{ clinic.name }} is booked"
TEST_ADDRESS = "frontdesk-test@example.net"


def _until(page: Page, check: Callable[[], bool], *, reload: bool, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the page never showed the expected state"
        time.sleep(0.2)
        if reload:
            page.reload()


def test_edit_preview_save_and_send_a_test(
    browser: Browser,  # noqa: F811
    live_server: LiveServer,
    clinic: Clinic,
    smtp: Server,  # noqa: F811
) -> None:
    with httpx.Client(base_url=live_server.url, headers=clinic.headers) as api:
        created = api.post(
            "/api/v1/users",
            json={"email": "owner@maple.example.com", "role": "owner", "password": PASSWORD},
        )
        assert created.status_code == 201
        _email_integration(api, clinic, smtp.port)
    # The oracle: the same template rendered with the same sample data, outside the UI.
    expected = clinic_templates.preview(KIND, "email", "en", SUBJECT, "Hello", None)["subject"]
    assert "Maple Family Clinic" in expected

    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{live_server.url}/admin/login")
    page.get_by_label("E-mail").fill("owner@maple.example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"**/admin/tenants/{clinic.id}")
    nav = page.get_by_role("navigation", name="Clinic")
    nav.get_by_role("link", name="Templates").click()
    page.wait_for_url(f"**/admin/tenants/{clinic.id}/templates")

    # Choose the English booking confirmation e-mail.
    page.get_by_label("Kind").select_option(KIND)
    page.get_by_label("Channel").select_option("email")
    page.get_by_label("Language").fill("en")
    page.get_by_role("button", name="Edit").click()
    page.wait_for_url("**/templates?kind=booking.confirmation&channel=email&language=en")
    expect(page.locator("#template-source")).to_contain_text("The built-in template (en)")

    # Typing updates the server-rendered preview, with the sample data.
    subject = page.get_by_label("Subject")
    subject.fill(SUBJECT)
    expect(page.locator("#preview-subject")).to_have_text(expected)

    # Save, then send a test of the saved template.
    page.get_by_role("button", name="Save").click()
    page.get_by_role("status").filter(has_text="Saved.").wait_for()
    expect(page.locator("#template-source")).to_contain_text("The clinic's own template")
    expect(page.get_by_label("Subject")).to_have_value(SUBJECT)
    page.get_by_label("Test e-mail address").fill(TEST_ADDRESS)
    page.get_by_role("button", name="Send a test").click()
    page.get_by_role("status").filter(has_text="queued to f***@example.net").wait_for()

    # The messages page: the live server's worker sends it; reload until it is sent.
    nav.get_by_role("link", name="Messages").click()
    page.wait_for_url(f"**/admin/tenants/{clinic.id}/messages")
    row = page.locator("tr", has_text="f***@example.net")
    status = row.locator("[data-status]")
    _until(page, lambda: row.count() == 1 and status.inner_text() == "sent", reload=True)
    assert row.get_by_text(KIND).is_visible()
    timeline = row.get_by_role("list").locator("li")
    assert [t.split()[0] for t in timeline.all_inner_texts()] == ["queued", "sending", "sent"]
    assert TEST_ADDRESS not in page.content()

    received = smtp.sink.only()
    assert received["Subject"] == expected
    assert received["To"] == TEST_ADDRESS
    context.close()
