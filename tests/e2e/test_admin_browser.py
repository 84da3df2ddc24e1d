"""The admin UI in a real headless Chromium: sign in and create an API key."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Clinic, LiveServer

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing; .ci/run installs the chromium package")
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        instance = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield instance
        instance.close()


def test_sign_in_and_create_an_api_key(
    browser,
    live_server: LiveServer,
    clinic: Clinic,  # type: ignore[no-untyped-def]
) -> None:
    password = "correct horse battery staple"
    with httpx.Client(base_url=live_server.url, headers=clinic.headers) as api:
        assert (
            api.post(
                "/api/v1/users",
                json={
                    "email": "owner@maple.example.com",
                    "role": "owner",
                    "password": password,
                },
            ).status_code
            == 201
        )

    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{live_server.url}/admin")
    assert page.url.endswith("/admin/login")
    page.get_by_label("E-mail").fill("owner@maple.example.com")
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"**/admin/tenants/{clinic.id}")
    assert page.get_by_role("heading", name="Maple Family Clinic").is_visible()

    keys = page.locator("#api-keys")
    keys.get_by_label("Name").fill("Front desk tablet")
    keys.get_by_label("Role").select_option("front_desk")
    keys.get_by_role("button", name="Create API key").click()
    new_key = page.locator("#new-key")
    new_key.wait_for()
    raw = new_key.inner_text()
    assert raw.startswith("cb_live_")
    row = page.locator("tr", has_text="Front desk tablet")
    assert row.get_by_text("front_desk").is_visible()

    # The key the browser was shown really works, with the role that was chosen.
    with httpx.Client(base_url=live_server.url, headers={"Authorization": f"Bearer {raw}"}) as api:
        assert api.get("/api/v1/tenant").status_code == 200
        assert api.get("/api/v1/api-keys").status_code == 403

    # Revoke through the UI (accepting the confirmation dialog).
    page.on("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Revoke").click()
    page.locator("tr", has_text="Front desk tablet").get_by_text("revoked").wait_for()
    with httpx.Client(base_url=live_server.url, headers={"Authorization": f"Bearer {raw}"}) as api:
        assert api.get("/api/v1/tenant").status_code == 401

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/admin/login")
    context.close()
