"""HTTP API: ``/api/v1`` routers, thin: parse, authorize, call a service."""

from __future__ import annotations

from fastapi import APIRouter

from clinicbridge.api import api_keys, roles, tenant, users


def api_v1_router() -> APIRouter:
    router = APIRouter(prefix="/api/v1")
    for module in (tenant, users, api_keys, roles):
        router.include_router(module.router)
    return router
