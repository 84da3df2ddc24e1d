"""A route class that applies ``Idempotency-Key`` to POST requests (see core.idempotency)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from clinicbridge.core import idempotency
from clinicbridge.core.errors import IdempotencyConflictError, InvalidInputError

HEADER = "idempotency-key"
_STORED_HEADERS = ("content-type", "location")


def _valid_key(key: str) -> bool:
    return 1 <= len(key) <= 255 and key.isascii() and key.isprintable()


class IdempotentRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def idempotent_handler(request: Request) -> Response:
            key = request.headers.get(HEADER)
            if request.method != "POST" or key is None:
                return await handler(request)
            if not _valid_key(key):
                raise InvalidInputError.one(
                    "header.Idempotency-Key", "must be 1-255 printable ASCII characters"
                )
            db = request.app.state.db
            now = request.app.state.clock.now()
            credential = request.headers.get("authorization", "")
            scope = hashlib.sha256(credential.encode()).hexdigest()
            body = await request.body()
            request_hash = idempotency.fingerprint(
                request.method.encode(), request.url.path.encode(), body
            )
            cipher: idempotency.ResponseCipher = request.app.state.idempotency_cipher
            stored = await run_in_threadpool(idempotency.claim, db, scope, key, request_hash, now)
            if stored is not None:
                answer = cipher.open(scope, key, stored.body)
                if answer is None:
                    raise IdempotencyConflictError(
                        "The answer stored for this Idempotency-Key can no longer be read "
                        "(the master key was rotated); send the request with a new key."
                    )
                headers = {**stored.headers, "Idempotent-Replayed": "true"}
                return Response(answer, status_code=stored.status, headers=headers)
            try:
                response = await handler(request)
            except BaseException:
                await run_in_threadpool(idempotency.release, db, scope, key)
                raise
            if response.status_code >= 500:
                await run_in_threadpool(idempotency.release, db, scope, key)
                return response
            kept = {h: response.headers[h] for h in _STORED_HEADERS if h in response.headers}
            sealed = cipher.seal(scope, key, bytes(response.body))
            result = idempotency.StoredResponse(response.status_code, sealed, kept)
            await run_in_threadpool(idempotency.complete, db, scope, key, result)
            return response

        return idempotent_handler
