"""The one place errors become RFC 9457 ``application/problem+json`` responses."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from clinicbridge.core.errors import ClinicBridgeError, Problem, validation_errors

PROBLEM_JSON = "application/problem+json"

_HTTP_PROBLEMS: dict[int, tuple[str, str, str]] = {
    400: ("bad-request", "Bad request", "The request could not be understood."),
    401: ("unauthenticated", "Authentication required", "A valid API key or session is required."),
    403: ("forbidden", "Forbidden", "This request is not allowed."),
    404: ("not-found", "Not found", "No resource at this address."),
    405: ("method-not-allowed", "Method not allowed", "This method is not allowed here."),
    413: ("payload-too-large", "Payload too large", "The request body is too large."),
    415: ("unsupported-media-type", "Unsupported media type", "Send application/json."),
    429: ("rate-limited", "Too many requests", "Slow down and retry later."),
    500: ("internal", "Internal server error", "Something went wrong on our side."),
    503: ("unavailable", "Service unavailable", "The service is not ready."),
}


def problem_response(
    problem: Problem, request_id: str | None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        problem.to_dict(request_id),
        status_code=problem.status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


def http_problem(status: int) -> Problem:
    slug, title, detail = _HTTP_PROBLEMS.get(status, ("error", "Error", "The request failed."))
    return Problem(status, slug, title, detail)


def _request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


async def _on_clinicbridge_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ClinicBridgeError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return problem_response(Problem.from_error(exc), _request_id(request), headers)


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = validation_errors(exc.errors())
    problem = Problem(
        422,
        "validation",
        "Invalid input",
        f"Invalid value for: {', '.join(e.field for e in errors)}.",
        errors,
    )
    return problem_response(problem, _request_id(request))


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    return problem_response(http_problem(exc.status_code), _request_id(request), headers or None)


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ClinicBridgeError, _on_clinicbridge_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
