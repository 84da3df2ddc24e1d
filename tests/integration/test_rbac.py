"""Deny by default, permissions per role, no privilege escalation, custom roles."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient

from clinicbridge.api.deps import (
    PUBLIC_PATHS,
    check_permissions,
    iter_api_routes,
    require,
    route_permission,
)
from clinicbridge.core.rbac import BUILTIN_ROLES, PERMISSIONS
from clinicbridge.db.engine import Database
from clinicbridge.web.routes import is_web_path
from tests.conftest import Clinic, add_key


def test_every_route_declares_a_permission_or_is_public(app: FastAPI) -> None:
    routes = list(iter_api_routes(app.router.routes))
    assert len(routes) > 20
    for route in routes:
        permission = route_permission(route)
        public = route.path in PUBLIC_PATHS or is_web_path(route.path)
        assert (permission in PERMISSIONS) != public, route.path
    assert {
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/docs",
        "/webhooks/{integration_id}",
        "/voice/vapi/{integration_id}",
        "/ical/{token}.ics",
        "/public/{clinic_slug}/services",
        "/public/{clinic_slug}/availability",
        "/public/{clinic_slug}/bookings",
        "/b/{token}",
        "/receipts/{token}",
        "/pay/done",
        "/pay/cancelled",
        "/payouts/onboarding/refresh",
        "/payouts/onboarding/done",
        "/oauth/calendar/callback",
    } == PUBLIC_PATHS


def test_a_route_without_permission_is_refused(app: FastAPI) -> None:
    router = APIRouter(prefix="/api/v1")

    @router.get("/forgotten")
    def forgotten() -> dict[str, str]:
        return {}

    app.include_router(router)
    with pytest.raises(RuntimeError, match="/forgotten declares no permission"):
        check_permissions(app, is_web_path)


def test_require_rejects_unknown_permissions() -> None:
    with pytest.raises(ValueError, match="unknown permission"):
        require("patients:teleport")


def test_builtin_roles_only_hold_known_permissions() -> None:
    assert set(BUILTIN_ROLES) == {
        "owner",
        "admin",
        "clinician",
        "front_desk",
        "billing",
        "auditor",
        "integration",
    }
    for permissions in BUILTIN_ROLES.values():
        assert permissions <= set(PERMISSIONS)
    assert BUILTIN_ROLES["owner"] == frozenset(PERMISSIONS)
    assert "tenant:write" not in BUILTIN_ROLES["admin"]
    assert not any(
        p.endswith((":write", ":manage", ":send", ":refund", ":notes"))
        for p in BUILTIN_ROLES["auditor"]
    )


@pytest.mark.parametrize(
    ("role", "method", "path", "allowed"),
    [
        ("auditor", "GET", "/api/v1/users", True),
        ("auditor", "POST", "/api/v1/users", False),
        ("clinician", "GET", "/api/v1/users", False),
        ("clinician", "GET", "/api/v1/tenant", True),
        ("front_desk", "GET", "/api/v1/api-keys", False),
        ("billing", "GET", "/api/v1/roles", False),
        ("integration", "GET", "/api/v1/tenant", True),
        ("integration", "POST", "/api/v1/api-keys", False),
        ("admin", "PATCH", "/api/v1/tenant", False),
        ("owner", "PATCH", "/api/v1/tenant", True),
    ],
)
def test_role_permissions_are_enforced(
    client: TestClient,
    clinic: Clinic,
    db: Database,
    role: str,
    method: str,
    path: str,
    allowed: bool,
) -> None:
    caller = add_key(db, clinic, role)
    body = {
        "POST": {"email": "x@maple.example.com", "role": "clinician"},
        "PATCH": {"name": "Maple Clinic"},
    }.get(method)
    response = client.request(method, path, headers=caller.headers, json=body)
    if allowed:
        assert response.status_code < 400, response.text
    else:
        assert response.status_code == 403
        problem = response.json()
        assert problem["permission"] in problem["detail"]
        assert problem["permission"] not in BUILTIN_ROLES[role]


def test_admin_cannot_mint_an_owner_key_or_make_an_owner(
    client: TestClient, clinic: Clinic, db: Database
) -> None:
    admin = add_key(db, clinic, "admin")
    key = client.post(
        "/api/v1/api-keys", headers=admin.headers, json={"name": "sneaky", "role": "owner"}
    )
    assert key.status_code == 403 and key.json()["permission"] == "tenant:write"
    user = client.post(
        "/api/v1/users",
        headers=admin.headers,
        json={"email": "boss@maple.example.com", "role": "owner"},
    )
    assert user.status_code == 403
    role = client.post(
        "/api/v1/roles",
        headers=admin.headers,
        json={"name": "almost_owner", "permissions": ["tenant:write"]},
    )
    assert role.status_code == 403


def test_custom_role_lifecycle(client: TestClient, clinic: Clinic) -> None:
    h = clinic.headers
    created = client.post(
        "/api/v1/roles",
        headers=h,
        json={
            "name": "scheduler",
            "description": "Books visits",
            "permissions": ["bookings:write", "bookings:read", "tenant:read", "bookings:read"],
        },
    )
    assert created.status_code == 201, created.text
    assert created.json() == {
        "name": "scheduler",
        "description": "Books visits",
        "permissions": ["bookings:read", "bookings:write", "tenant:read"],
        "builtin": False,
    }
    names = [r["name"] for r in client.get("/api/v1/roles", headers=h).json()["data"]]
    assert names[:7] == list(BUILTIN_ROLES) and "scheduler" in names

    key = client.post(
        "/api/v1/api-keys", headers=h, json={"name": "booking widget", "role": "scheduler"}
    ).json()
    widget = {"Authorization": f"Bearer {key['key']}"}
    assert client.get("/api/v1/tenant", headers=widget).status_code == 200
    assert client.get("/api/v1/users", headers=widget).status_code == 403

    updated = client.patch(
        "/api/v1/roles/scheduler", headers=h, json={"permissions": ["bookings:read", "users:read"]}
    )
    assert updated.json()["permissions"] == ["bookings:read", "users:read"]
    assert client.get("/api/v1/users", headers=widget).status_code == 200
    assert client.get("/api/v1/tenant", headers=widget).status_code == 403

    in_use = client.delete("/api/v1/roles/scheduler", headers=h)
    assert in_use.status_code == 409
    client.delete(f"/api/v1/api-keys/{key['id']}", headers=h)
    assert client.delete("/api/v1/roles/scheduler", headers=h).status_code == 204
    assert client.get("/api/v1/roles/scheduler", headers=h).status_code == 404


def test_custom_role_errors(client: TestClient, clinic: Clinic) -> None:
    h = clinic.headers
    unknown = client.post(
        "/api/v1/roles", headers=h, json={"name": "odd", "permissions": ["patients:teleport"]}
    )
    assert unknown.status_code == 422
    assert unknown.json()["errors"][0]["field"] == "permissions"
    assert "patients:teleport" in unknown.json()["errors"][0]["message"]
    assert (
        client.post(
            "/api/v1/roles", headers=h, json={"name": "admin", "permissions": []}
        ).status_code
        == 409
    )
    assert (
        client.patch("/api/v1/roles/owner", headers=h, json={"permissions": []}).status_code == 409
    )
    bad_name = client.post("/api/v1/roles", headers=h, json={"name": "Bad Name", "permissions": []})
    assert bad_name.status_code == 422 and bad_name.json()["errors"][0]["field"] == "name"
    unknown_role = client.post("/api/v1/api-keys", headers=h, json={"name": "k", "role": "ghost"})
    assert unknown_role.status_code == 422
    assert unknown_role.json()["errors"][0] == {
        "field": "role",
        "message": "unknown role 'ghost'",
        "code": "unknown_role",
    }


def test_cross_tenant_access_is_404(client: TestClient, make_clinic: Callable[..., Clinic]) -> None:
    maple, birch = make_clinic("Maple Clinic"), make_clinic("Birch Dental")
    user = client.post(
        "/api/v1/users",
        headers=maple.headers,
        json={"email": "nurse@maple.example.com", "role": "clinician"},
    ).json()
    key = client.post("/api/v1/api-keys", headers=maple.headers, json={"name": "m"}).json()
    client.post(
        "/api/v1/roles",
        headers=maple.headers,
        json={"name": "maple_only", "permissions": ["tenant:read"]},
    )
    for method, path in [
        ("GET", f"/api/v1/users/{user['id']}"),
        ("PATCH", f"/api/v1/users/{user['id']}"),
        ("DELETE", f"/api/v1/users/{user['id']}"),
        ("GET", f"/api/v1/api-keys/{key['id']}"),
        ("DELETE", f"/api/v1/api-keys/{key['id']}"),
        ("GET", "/api/v1/roles/maple_only"),
        ("DELETE", "/api/v1/roles/maple_only"),
    ]:
        body = {"display_name": "x"} if method == "PATCH" else None
        response = client.request(method, path, headers=birch.headers, json=body)
        assert response.status_code == 404, (method, path, response.text)
        assert "nurse" not in response.text
    assert client.get("/api/v1/tenant", headers=birch.headers).json()["id"] == birch.id
    listed = client.get("/api/v1/users", headers=birch.headers).json()["data"]
    assert all(u["email"] != "nurse@maple.example.com" for u in listed)
    # the Maple key still works, untouched by Birch's attempts
    assert (
        client.get(f"/api/v1/api-keys/{key['id']}", headers=maple.headers).json()["revoked_at"]
        is None
    )
