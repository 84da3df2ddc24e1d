"""The pages Stripe sends a provider back to from payout onboarding: the signed refresh
link makes a new onboarding link and redirects to it (audited), the return page says
whether Stripe still needs information, and an altered, expired or misdirected token
gets a plain error page that tells nothing."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import sqlalchemy as sa
from fastapi.testclient import TestClient

from clinicbridge.audit.models import AuditEvent
from clinicbridge.db.engine import Database
from clinicbridge.payments import onboarding_links
from clinicbridge.settings import Settings
from clinicbridge.testing.stripe import FakeStripe
from tests.conftest import Clinic
from tests.payments_support import API, Shop, fake, ok, shop

__all__ = ["fake"]
PRIVATE = ("Ada", "external_account", "tos_acceptance", "acct_")


def _clean(html: str) -> None:
    for word in PRIVATE:
        assert word not in html, word


def start(client: TestClient, s: Shop) -> dict[str, Any]:
    url = f"{API}/providers/{s.provider}/payout-account"
    return dict(ok(client.post(url, headers=s.clinic.headers), 201))


def link_params(fake: FakeStripe, n: int = -1) -> tuple[str, str]:
    """The ``refresh_url`` and ``return_url`` sent with the n-th account link, as paths."""
    params = fake.calls("POST", "/v1/account_links")[n].params

    def path(url: str) -> str:
        parts = urlsplit(url)
        return f"{parts.path}?{parts.query}"

    return path(params["refresh_url"]), path(params["return_url"])


def audits(db: Database, action: str) -> list[AuditEvent]:
    with db.read() as session:
        return list(session.scalars(sa.select(AuditEvent).where(AuditEvent.action == action)))


def test_refresh_makes_a_new_link_and_redirects_to_it(
    client: TestClient, clinic: Clinic, fake: FakeStripe, db: Database, settings: Settings
) -> None:
    s = shop(client, clinic)
    first = start(client, s)
    refresh, done = link_params(fake)
    assert refresh.startswith("/payouts/onboarding/refresh?token=")
    assert done.startswith("/payouts/onboarding/done?token=")
    assert s.provider not in refresh and s.provider not in done  # only inside the token
    answer = client.get(refresh, follow_redirects=False)
    assert answer.status_code == 303, answer.text
    location = answer.headers["location"]
    assert location.startswith("https://connect.stripe.test/setup/")
    assert location != first["onboarding_url"]
    assert answer.headers["cache-control"] == "no-store"
    links = fake.calls("POST", "/v1/account_links")
    assert len(links) == 2 and links[1].params["account"] == first["stripe_account_id"]
    assert len({c.idempotency_key for c in links}) == 2  # a fresh key for each link
    assert len(fake.calls("POST", "/v1/accounts")) == 1  # no second account
    # the new link comes back to pages with fresh tokens, which work too
    again = client.get(link_params(fake)[0], follow_redirects=False)
    assert again.status_code == 303
    events = audits(db, "connected_account.onboarding_link")
    assert len(events) == 2 and {e.resource_id for e in events} == {first["id"]}
    assert all(e.tenant_id == clinic.id and e.actor_id == "payout_onboarding_link" for e in events)
    assert all("connect.stripe.test" not in str(e.diff) for e in events)  # never the link


def test_refresh_with_stripe_down_says_try_later_and_writes_nothing(
    client: TestClient, clinic: Clinic, fake: FakeStripe, db: Database
) -> None:
    s = shop(client, clinic)
    start(client, s)
    refresh, _ = link_params(fake)
    fake.down = True
    answer = client.get(refresh, follow_redirects=False)
    assert answer.status_code == 503
    assert answer.headers["content-type"].startswith("text/html")
    assert "try again" in answer.text and "Maple Family Clinic" in answer.text
    assert audits(db, "connected_account.onboarding_link") == []
    fake.down = False
    assert client.get(refresh, follow_redirects=False).status_code == 303


def test_done_says_what_stripe_still_needs_then_that_it_is_complete(
    client: TestClient, clinic: Clinic, fake: FakeStripe
) -> None:
    s = shop(client, clinic)
    made = start(client, s)
    _, done = link_params(fake)
    page = client.get(done)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "needs a little more information" in page.text
    assert "Maple Family Clinic" in page.text and "noindex" in page.headers["x-robots-tag"]
    _clean(page.text)
    # the continue button goes to a signed refresh page, which leads to a new link
    href = page.text.split('class="button" href="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
    parts = urlsplit(href)
    assert parts.path == "/payouts/onboarding/refresh" and "token" in parse_qs(parts.query)
    assert client.get(f"{parts.path}?{parts.query}", follow_redirects=False).status_code == 303
    fake.onboard(made["stripe_account_id"])
    page = client.get(done)
    assert page.status_code == 200 and "Payout setup complete" in page.text
    assert 'class="button"' not in page.text
    _clean(page.text)
    # the page asked Stripe, and the account's state is kept
    assert fake.calls("GET", f"/v1/accounts/{made['stripe_account_id']}")
    status = ok(client.get(f"{API}/providers/{s.provider}/payout-account", headers=clinic.headers))
    assert status["status"] == "active"


def test_done_while_stripe_reviews_and_when_stripe_is_down(
    client: TestClient, clinic: Clinic, fake: FakeStripe
) -> None:
    s = shop(client, clinic)
    made = start(client, s)
    _, done = link_params(fake)
    fake.update_account(
        made["stripe_account_id"], details_submitted=True, currently_due=[], past_due=[],
        disabled_reason="requirements.pending_verification",
    )  # fmt: skip
    page = client.get(done)
    assert page.status_code == 200 and "reviewing your details" in page.text
    fake.down = True
    page = client.get(done)
    assert page.status_code == 503 and "try again" in page.text


def test_tampered_expired_and_misdirected_tokens_get_a_plain_error_page(
    client: TestClient,
    make_clinic: Callable[..., Clinic],
    fake: FakeStripe,
    settings: Settings,
) -> None:
    ours, theirs = make_clinic("Maple"), make_clinic("Birch")
    s = shop(client, ours)
    other = shop(client, theirs)
    start(client, s)
    start(client, other)
    refresh, done = link_params(fake, 0)
    token = parse_qs(urlsplit(refresh).query)["token"][0]
    flipped = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    key = onboarding_links.link_key(settings)
    past = datetime.now(UTC) - timedelta(days=8)
    expired = onboarding_links.make_token(
        key, onboarding_links.OnboardingRef(ours.id, s.provider, "refresh"), past
    )
    # genuine, but naming a provider its clinic does not have
    later = datetime.now(UTC) + timedelta(days=1)
    misdirected = onboarding_links.make_token(
        key, onboarding_links.OnboardingRef(ours.id, other.provider, "refresh"), later
    )
    done_token = parse_qs(urlsplit(done).query)["token"][0]
    before = len(fake.calls("POST", "/v1/account_links"))
    cases = [
        (f"/payouts/onboarding/refresh?token={flipped}", 404),
        ("/payouts/onboarding/refresh?token=not-a-token", 404),
        ("/payouts/onboarding/refresh", 404),
        (f"/payouts/onboarding/refresh?token={done_token}", 404),  # another page's token
        (f"/payouts/onboarding/done?token={token}", 404),
        (f"/payouts/onboarding/refresh?token={expired}", 410),
        (f"/payouts/onboarding/refresh?token={misdirected}", 404),
        (f"/payouts/onboarding/done?token={misdirected}", 404),
    ]
    for path, status in cases:
        page = client.get(path, follow_redirects=False)
        assert page.status_code == status, path
        assert page.headers["content-type"].startswith("text/html"), path
        assert "Maple" not in page.text and "Birch" not in page.text, path
        assert other.provider not in page.text and s.provider not in page.text
    assert "expired" in client.get(f"/payouts/onboarding/refresh?token={expired}").text
    assert len(fake.calls("POST", "/v1/account_links")) == before
    # a receipt token is not an onboarding token, even naming the same subject
    from clinicbridge.payments import receipt_links

    receipt = receipt_links.make_token(
        receipt_links.link_key(settings), f"refresh.{ours.id}.{s.provider}", later
    )
    page = client.get(f"/payouts/onboarding/refresh?token={receipt}", follow_redirects=False)
    assert page.status_code == 404
