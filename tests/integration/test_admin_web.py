"""Admin UI over HTTP: sign-in, cookie flags, CSRF, tenant isolation (no browser)."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Clinic

PASSWORD = "correct horse battery staple"


def _user(client: TestClient, clinic: Clinic, email: str, role: str = "owner") -> dict:  # type: ignore[type-arg]
    response = client.post(
        "/api/v1/users",
        headers=clinic.headers,
        json={"email": email, "role": role, "password": PASSWORD},
    )
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def _login(client: TestClient, email: str, password: str = PASSWORD, clinic: str = ""):  # type: ignore[no-untyped-def]
    page = client.get("/admin/login")
    token = re.search(r'name="login_csrf" value="([^"]+)"', page.text)
    assert token
    return client.post(
        "/admin/login",
        data={"email": email, "password": password, "clinic": clinic, "login_csrf": token.group(1)},
        follow_redirects=False,
    )


def _csrf(page_html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page_html)
    assert found
    return found.group(1)


def test_admin_redirects_to_login(client: TestClient) -> None:
    response = client.get("/admin", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/admin/login"
    page = client.get("/admin/tenants/ten_x", follow_redirects=False)
    assert page.status_code == 303


def test_login_sets_a_strict_http_only_cookie(client: TestClient, clinic: Clinic) -> None:
    _user(client, clinic, "owner@maple.example.com")
    response = _login(client, "Owner@Maple.example.com")
    assert response.status_code == 303
    assert response.headers["location"] == f"/admin/tenants/{clinic.id}"
    cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith("cb_session="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    page = client.get(f"/admin/tenants/{clinic.id}")
    assert "owner@maple.example.com" in page.text and "API keys" in page.text


def test_wrong_password_and_unknown_user_look_the_same(client: TestClient, clinic: Clinic) -> None:
    _user(client, clinic, "owner@maple.example.com")
    wrong = _login(client, "owner@maple.example.com", "not the password")
    unknown = _login(client, "ghost@maple.example.com")
    assert wrong.status_code == unknown.status_code == 401
    assert "Wrong e-mail or password." in wrong.text and "Wrong e-mail or password." in unknown.text


def test_login_without_form_token_is_refused(client: TestClient, clinic: Clinic) -> None:
    _user(client, clinic, "owner@maple.example.com")
    response = client.post(
        "/admin/login",
        data={"email": "owner@maple.example.com", "password": PASSWORD, "login_csrf": "forged"},
    )
    assert response.status_code == 403


def test_post_without_csrf_token_is_refused(client: TestClient, clinic: Clinic) -> None:
    _user(client, clinic, "owner@maple.example.com")
    _login(client, "owner@maple.example.com")
    forged = client.post(
        f"/admin/tenants/{clinic.id}/api-keys", data={"name": "x", "role": "integration"}
    )
    assert forged.status_code == 403
    keys = client.get("/api/v1/api-keys", headers=clinic.headers).json()["data"]
    assert [k["name"] for k in keys] == ["test"]


def test_create_and_revoke_key_with_htmx(client: TestClient, clinic: Clinic) -> None:
    _user(client, clinic, "owner@maple.example.com")
    _login(client, "owner@maple.example.com")
    csrf = _csrf(client.get(f"/admin/tenants/{clinic.id}").text)
    hx = {"HX-Request": "true", "X-CSRF-Token": csrf}
    created = client.post(
        f"/admin/tenants/{clinic.id}/api-keys",
        headers=hx,
        data={"name": "Reception tablet", "role": "front_desk"},
    )
    assert created.status_code == 200
    assert created.text.lstrip().startswith('<section class="card" id="api-keys">')
    raw = re.search(r'id="new-key">(cb_live_[^<]+)<', created.text)
    assert raw
    assert (
        client.get(
            "/api/v1/tenant", headers={"Authorization": f"Bearer {raw.group(1)}"}
        ).status_code
        == 200
    )
    key_id = re.search(r'data-key-id="(key_[^"]+)">\s*<td>Reception tablet', created.text)
    assert key_id
    revoked = client.post(
        f"/admin/tenants/{clinic.id}/api-keys/{key_id.group(1)}/revoke", headers=hx
    )
    assert revoked.status_code == 200 and raw.group(1) not in revoked.text
    assert (
        client.get(
            "/api/v1/tenant", headers={"Authorization": f"Bearer {raw.group(1)}"}
        ).status_code
        == 401
    )


def test_form_errors_are_shown_in_place(client: TestClient, clinic: Clinic) -> None:
    _user(client, clinic, "owner@maple.example.com")
    _login(client, "owner@maple.example.com")
    csrf = _csrf(client.get(f"/admin/tenants/{clinic.id}").text)
    hx = {"HX-Request": "true", "X-CSRF-Token": csrf}
    bad = client.post(
        f"/admin/tenants/{clinic.id}/users", headers=hx, data={"email": "nope", "role": "clinician"}
    )
    assert bad.status_code == 422 and "email:" in bad.text


def test_permissions_apply_to_the_ui(client: TestClient, clinic: Clinic) -> None:
    _user(client, clinic, "nurse@maple.example.com", role="clinician")
    _login(client, "nurse@maple.example.com")
    page = client.get(f"/admin/tenants/{clinic.id}")
    assert page.status_code == 200 and "API keys" not in page.text
    csrf = _csrf(page.text)
    denied = client.post(
        f"/admin/tenants/{clinic.id}/api-keys",
        headers={"X-CSRF-Token": csrf},
        data={"name": "x", "role": "integration"},
    )
    assert denied.status_code == 403


def test_another_clinics_page_is_404(
    client: TestClient, make_clinic: Callable[..., Clinic]
) -> None:
    maple, birch = make_clinic("Maple"), make_clinic("Birch")
    _user(client, maple, "owner@maple.example.com")
    _login(client, "owner@maple.example.com")
    assert client.get(f"/admin/tenants/{birch.id}").status_code == 404


def test_logout_ends_the_session(client: TestClient, clinic: Clinic) -> None:
    _user(client, clinic, "owner@maple.example.com")
    _login(client, "owner@maple.example.com")
    csrf = _csrf(client.get(f"/admin/tenants/{clinic.id}").text)
    cookie = client.cookies.get("cb_session")
    out = client.post("/admin/logout", data={"csrf_token": csrf}, follow_redirects=False)
    assert out.status_code == 303
    client.cookies.set("cb_session", cookie or "")
    assert client.get(f"/admin/tenants/{clinic.id}", follow_redirects=False).status_code == 303


@pytest.mark.parametrize("clinic_field", ["", "birch"])
def test_same_email_at_two_clinics(
    client: TestClient, make_clinic: Callable[..., Clinic], clinic_field: str
) -> None:
    maple, birch = make_clinic("Maple"), make_clinic("Birch")
    _user(client, maple, "locum@example.com")
    _user(client, birch, "locum@example.com")
    response = _login(client, "locum@example.com", clinic=clinic_field)
    if clinic_field:
        assert response.headers["location"] == f"/admin/tenants/{birch.id}"
    else:
        assert response.status_code == 401 and "several clinics" in response.text


def test_dead_jobs_can_be_retried_from_the_ui(client: TestClient, clinic: Clinic, db) -> None:  # type: ignore[no-untyped-def]
    from tests.integration.test_jobs_api import _dead_job

    job_id = _dead_job(db, clinic.id)
    _user(client, clinic, "owner@maple.example.com")
    _login(client, "owner@maple.example.com")
    page = client.get(f"/admin/tenants/{clinic.id}/jobs")
    assert page.status_code == 200 and job_id in page.text and "ExternalServiceError" in page.text
    csrf = _csrf(page.text)
    retried = client.post(
        f"/admin/tenants/{clinic.id}/jobs/{job_id}/retry",
        headers={"HX-Request": "true", "X-CSRF-Token": csrf},
    )
    assert retried.status_code == 200 and f"Job {job_id} will run again now." in retried.text
    assert client.get(f"/api/v1/jobs/{job_id}", headers=clinic.headers).json()["state"] == "pending"
    again = client.post(
        f"/admin/tenants/{clinic.id}/jobs/{job_id}/retry",
        headers={"HX-Request": "true", "X-CSRF-Token": csrf},
    )
    assert again.status_code == 409 and "only dead, failed or cancelled" in again.text
