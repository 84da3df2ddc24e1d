"""An in-memory Stripe that follows the documented API, for tests and demos.

Use it as an ``httpx.MockTransport`` handler (``httpx.MockTransport(fake)``) or serve
it on 127.0.0.1 (``with fake.serve() as url``) and point the ``stripe`` integration's
``api_base`` at it. What it does as Stripe does:

* ``Authorization: Bearer sk_test_...`` (the configured key, or the ``stripe`` SDK's
  basic auth with the key as user), else 401 with Stripe's error JSON;
* form-encoded bodies with nested keys (``metadata[booking_id]``,
  ``line_items[0][price_data][currency]``), see ``stripe_wire.decode_form``;
* ``Idempotency-Key``: the same key with the same parameters replays the first
  answer (``Idempotent-Replayed: true``); with other parameters it is a 400
  ``idempotency_error``; keys are scoped to the API key;
* products, recurring prices, subscriptions and their invoices (``stripe_billing``);
* customers, payment_intents (create, retrieve, confirm with a test payment method,
  cancel, capture), charges, refunds (create, retrieve, list by charge), checkout
  sessions (payment mode: ``url``, ``expires_at``, expire), balance; Connect accounts,
  account links, connected balances, transfers and Terminal (``testing.stripe_connect``);
* test payment methods: ``pm_card_visa`` (succeeds), ``pm_card_chargeDeclined``,
  ``pm_card_chargeDeclinedInsufficientFunds`` (402 ``card_error``),
  ``pm_card_authenticationRequired`` (``requires_action``);
* the events a real account sends (``payment_intent.succeeded``, ``.payment_failed``,
  ``.canceled``, ``charge.refunded``, ``charge.dispute.created``,
  ``checkout.session.completed``, ...), kept in ``events``: ``deliveries(sign)``
  gives ``(body, Stripe-Signature)`` pairs, where ``sign`` is the caller's signer
  (tests use ``stripe.WebhookSignature.generate_signature_header``).

Failures, to exercise retries and the circuit breaker: ``fail(status)`` answers the
next requests with a 5xx/429 before doing anything; ``fail(status, after=True)``
does the work, then answers the error (a response lost on the way back); ``down``
refuses connections (MockTransport) and ``fail_timeout()`` raises a read timeout
after doing the work.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from clinicbridge.testing.stripe_billing import StripeBilling
from clinicbridge.testing.stripe_connect import StripeConnectObjects
from clinicbridge.testing.stripe_objects import API_VERSION, _public
from clinicbridge.testing.stripe_wire import (
    StripeError,
    WireRequest,
    WireResponse,
    decode_form,
    invalid,
    list_object,
    serve,
    wire_request,
)


@dataclass
class _Failure:
    status: int | None  # None: a read timeout
    after: bool  # do the work first (the answer is lost)


@dataclass
class Recorded:
    """A request the fake received (for assertions)."""

    method: str
    path: str
    params: dict[str, Any]
    idempotency_key: str | None
    stripe_version: str | None
    replayed: bool = False


@dataclass
class FakeStripe(StripeBilling, StripeConnectObjects):
    api_key: str = "sk_test_fake0000000000000000000000"
    webhook_secret: str = "whsec_fake00000000000000000000000000"  # noqa: S105
    base_url: str = "https://checkout.stripe.test"  # where checkout session URLs point
    clock: Callable[[], float] = time.time
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    requests: list[Recorded] = field(default_factory=list)
    down: bool = False
    received: int = 0  # every request that reached the fake, failed ones included
    _failures: list[_Failure] = field(default_factory=list)
    _idempotency: dict[tuple[str, str], tuple[str, WireResponse]] = field(default_factory=dict)
    _delivered: int = 0
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _seq: int = 0

    # -- controls ---------------------------------------------------------------------

    def fail(self, status: int = 500, *, times: int = 1, after: bool = False) -> None:
        """Answer the next ``times`` requests with ``status`` (before or after the work)."""
        with self._lock:
            self._failures.extend(_Failure(status, after) for _ in range(times))

    def fail_timeout(self, *, times: int = 1) -> None:
        """Do the work of the next requests, then time out (MockTransport only)."""
        with self._lock:
            self._failures.extend(_Failure(None, True) for _ in range(times))

    def calls(self, method: str, path_prefix: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path.startswith(path_prefix)]

    # -- as an httpx transport handler, or served -----------------------------------

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused (fake Stripe is down)", request=request)
        self.received += 1
        target = request.url.raw_path.decode()
        wire = wire_request(request.method, target, dict(request.headers), request.content)
        failure = self._next_failure()
        if failure is not None and not failure.after:
            return _to_httpx(self._failure_response(failure))
        response = self.handle(wire)
        if failure is not None:
            if failure.status is None:
                raise httpx.ReadTimeout("read timed out (fake Stripe)", request=request)
            return _to_httpx(self._failure_response(failure))
        return _to_httpx(response)

    @contextmanager
    def serve(self) -> Iterator[str]:
        """Serve on 127.0.0.1; yields the base URL to use as the integration's api_base."""

        def handler(wire: WireRequest) -> WireResponse:
            self.received += 1
            failure = self._next_failure()
            if failure is not None and not failure.after:
                return self._failure_response(failure)
            response = self.handle(wire)
            return self._failure_response(failure) if failure is not None else response

        with serve(handler) as url:
            yield url

    def _next_failure(self) -> _Failure | None:
        with self._lock:
            return self._failures.pop(0) if self._failures else None

    def _failure_response(self, failure: _Failure) -> WireResponse:
        status = failure.status or 504
        if status == 429:
            error = StripeError(
                429,
                "invalid_request_error",
                "Too many requests hit the API too quickly.",
                code="rate_limit",
            )
        else:
            error = StripeError(status, "api_error", "An unknown error occurred (fake outage).")
        return error.response(self._request_id())

    # -- the API ----------------------------------------------------------------------

    def handle(self, request: WireRequest) -> WireResponse:
        request_id = self._request_id()
        with self._lock:
            try:
                key = self._authenticate(request)
                params = decode_form(request.body) if request.method == "POST" else request.query
                idem = request.headers.get("idempotency-key")
                record = Recorded(
                    request.method,
                    request.path,
                    params,
                    idem,
                    request.headers.get("stripe-version"),
                )
                self.requests.append(record)
                if request.method == "POST" and idem:
                    fingerprint = _fingerprint(request.path, params)
                    saved = self._idempotency.get((key, idem))
                    if saved is not None:
                        if saved[0] != fingerprint:
                            raise StripeError(
                                400,
                                "idempotency_error",
                                "Keys for idempotent requests can only be used with the same "
                                "parameters they were first used with. Try using a key other "
                                "than '" + idem + "' if you meant to execute a different request.",
                            )
                        record.replayed = True
                        replay = saved[1]
                        return WireResponse(
                            replay.status,
                            replay.body,
                            {**replay.headers, "Idempotent-Replayed": "true"},
                        )
                try:
                    self._stripe_account = request.headers.get("stripe-account")
                    body = self._route(request.method, request.path, params)
                    response = WireResponse(200, body, {"Request-Id": request_id})
                except StripeError as exc:
                    if exc.status >= 500 or exc.code == "parameter_missing":
                        raise  # Stripe saves no result for requests that never ran
                    response = exc.response(request_id)
                if request.method == "POST" and idem:
                    self._idempotency[(key, idem)] = (_fingerprint(request.path, params), response)
                response.headers["Stripe-Version"] = request.headers.get(
                    "stripe-version", API_VERSION
                )
                if idem:
                    response.headers["Idempotency-Key"] = idem
                return response
            except StripeError as exc:
                return exc.response(request_id)

    def _authenticate(self, request: WireRequest) -> str:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "basic":
            import base64

            token = base64.b64decode(token).decode().partition(":")[0]
        elif scheme.lower() != "bearer":
            token = ""
        if not token:
            raise StripeError(
                401,
                "invalid_request_error",
                "You did not provide an API key. "
                "You need to provide your API key in the Authorization header, "
                "using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
            )
        if not secrets.compare_digest(token, self.api_key):
            masked = token[:8] + "*" * max(0, len(token) - 12) + token[-4:]
            raise StripeError(401, "invalid_request_error", f"Invalid API Key provided: {masked}")
        return token

    def _route(self, method: str, path: str, params: dict[str, Any]) -> dict[str, Any]:
        parts = path.strip("/").split("/")
        if not parts or parts[0] != "v1":
            raise invalid(f"Unrecognized request URL ({method}: {path}).")
        parts = parts[1:]
        match method, parts:
            case "GET", ["balance"] if not self._stripe_account:  # the platform's own
                return self._balance()
            case "POST", ["customers"]:
                return self._customer(params)
            case "GET", ["customers", object_id]:
                return self._find("customer", object_id)
            case "POST", ["payment_intents"]:
                return self._create_intent(params)
            case "GET", ["payment_intents", object_id]:
                return self._find("payment_intent", object_id, "intent")
            case "POST", ["payment_intents", object_id, "confirm"]:
                return self.confirm(object_id, params.get("payment_method"))
            case "POST", ["payment_intents", object_id, "cancel"]:
                return self._cancel_intent(object_id, params.get("cancellation_reason"))
            case "POST", ["payment_intents", object_id, "capture"]:
                return self._capture(object_id, params)
            case "GET", ["charges", object_id]:
                return self._find("charge", object_id, "charge")
            case "POST", ["refunds"]:
                return self._create_refund(params)
            case "GET", ["refunds", object_id]:
                return self._find("refund", object_id, "refund")
            case "GET", ["refunds"]:
                items = [
                    r
                    for r in self.of_type("refund")
                    if not params.get("charge") or r["charge"] == params["charge"]
                ]
                return list_object("/v1/refunds", items, params)
            case "POST", ["checkout", "sessions"]:
                return self._create_session(params)
            case "GET", ["checkout", "sessions", object_id]:
                return self._find("checkout.session", object_id, "session")
            case "POST", ["checkout", "sessions", object_id, "expire"]:
                return self.expire_session(object_id)
        billing = self._billing_route(method, parts, params)
        if billing is not None:
            return _public(billing)
        found = self._route_connect(method, parts, params)  # Connect and Terminal
        if found is not None:
            return found
        raise invalid(f"Unrecognized request URL ({method}: {path}).")

    def _request_id(self) -> str:
        return "req_" + secrets.token_hex(7)


def _fingerprint(path: str, params: dict[str, Any]) -> str:
    canonical = json.dumps([path, params], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _to_httpx(response: WireResponse) -> httpx.Response:
    return httpx.Response(
        response.status,
        content=response.encoded(),
        headers={"Content-Type": "application/json", **response.headers},
    )
