"""``HostRouter``: one ``httpx`` transport that sends each host to its own fake."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import httpx

Handler = Callable[[httpx.Request], httpx.Response]


class HostRouter(httpx.BaseTransport):
    """Requests to a known host go to its handler; others to ``fallback`` (a real
    transport, e.g. for a CalDAV server on 127.0.0.1), or fail as a connect error."""

    def __init__(
        self, handlers: Mapping[str, Handler], fallback: httpx.BaseTransport | None = None
    ) -> None:
        self.handlers = dict(handlers)
        self.fallback = fallback

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        handler = self.handlers.get(request.url.host)
        if handler is not None:
            response = handler(request)
            response.request = request
            if not isinstance(response.stream, httpx.SyncByteStream):
                response.read()
            return response
        if self.fallback is None:
            raise httpx.ConnectError(f"no fake for host {request.url.host}", request=request)
        return self.fallback.handle_request(request)

    def close(self) -> None:
        if self.fallback is not None:
            self.fallback.close()
