"""Problem+json for every error, request ids, body limits, 500s that reveal nothing."""

from __future__ import annotations

import json
import logging

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.conftest import Clinic

PROBLEM = "application/problem+json"


def assert_problem(response, status: int) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == status
    assert body["type"].startswith("https://clinicbridge.dev/problems/")
    assert body["title"] and body["detail"]
    assert body["request_id"] == response.headers["x-request-id"]
    return body


def test_unknown_path_is_problem_404(client: TestClient) -> None:
    assert_problem(client.get("/api/v1/nothing-here"), 404)


def test_wrong_method_is_problem_405(client: TestClient) -> None:
    assert_problem(client.delete("/healthz"), 405)


def test_unknown_field_names_the_field(client: TestClient, clinic: Clinic) -> None:
    response = client.post(
        "/api/v1/users",
        headers=clinic.headers,
        json={"email": "nurse@maple.example.com", "role": "clinician", "favourite_colour": "x"},
    )
    body = assert_problem(response, 422)
    assert [e["field"] for e in body["errors"]] == ["favourite_colour"]
    assert body["errors"][0]["code"] == "extra_forbidden"


def test_wrong_type_names_the_field_and_hides_the_value(client: TestClient, clinic: Clinic) -> None:
    response = client.post(
        "/api/v1/api-keys", headers=clinic.headers, json={"name": ["Jane Q. Patient"]}
    )
    body = assert_problem(response, 422)
    assert body["errors"][0]["field"] == "name"
    assert "Jane Q. Patient" not in response.text


def test_malformed_json_names_the_body(client: TestClient, clinic: Clinic) -> None:
    response = client.post(
        "/api/v1/users",
        headers={**clinic.headers, "content-type": "application/json"},
        content=b'{"email": "a@maple.example.com", ',
    )
    body = assert_problem(response, 422)
    assert body["errors"] == [
        {"field": "body", "message": "the body is not valid JSON", "code": "json_invalid"}
    ]


def test_query_parameter_errors_name_the_parameter(client: TestClient, clinic: Clinic) -> None:
    body = assert_problem(client.get("/api/v1/users?limit=1000", headers=clinic.headers), 422)
    assert body["errors"][0]["field"] == "query.limit"


def test_oversized_body_with_content_length_is_413(client: TestClient, clinic: Clinic) -> None:
    big = json.dumps({"name": "x" * (1024 * 1024 + 10)})
    assert_problem(
        client.post(
            "/api/v1/api-keys",
            headers={**clinic.headers, "content-type": "application/json"},
            content=big,
        ),
        413,
    )


def test_oversized_streamed_body_is_413(client: TestClient, clinic: Clinic) -> None:
    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(20):
            yield b"x" * 65536

    response = client.post(
        "/api/v1/api-keys",
        headers={**clinic.headers, "content-type": "application/json"},
        content=chunks(),
    )
    assert_problem(response, 413)


def test_request_id_is_echoed_or_generated(client: TestClient) -> None:
    assert (
        client.get("/healthz", headers={"X-Request-Id": "abc-123"}).headers["x-request-id"]
        == "abc-123"
    )
    generated = client.get("/healthz", headers={"X-Request-Id": "bad id\twith spaces"})
    assert generated.headers["x-request-id"].startswith("req_")


@pytest.fixture
def crashing_app(app: FastAPI) -> FastAPI:
    @app.post("/crash-for-test")
    def crash(payload: dict[str, str]) -> None:
        raise RuntimeError(f"database said no for {payload['patient']}")

    return app


def test_unhandled_error_is_a_bare_500(
    crashing_app: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        TestClient(crashing_app, raise_server_exceptions=False) as client,
        caplog.at_level(logging.INFO),
    ):
        response = client.post("/crash-for-test", json={"patient": "Jane Q. Patient"})
    body = assert_problem(response, 500)
    assert set(body) == {"type", "title", "status", "detail", "request_id"}
    assert "Jane" not in response.text and "Traceback" not in response.text
    assert "RuntimeError" not in response.text
    logged = "\n".join(
        r.getMessage() + json.dumps(getattr(r, "fields", {})) for r in caplog.records
    )
    assert "RuntimeError" in logged  # the class and stack are logged for operators...
    assert "Jane" not in logged  # ...but never the message, which may hold patient data
