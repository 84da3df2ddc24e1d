"""The bench server: the real app (embedded worker included) plus ``/bench/hello``."""

from __future__ import annotations

import sys

import uvicorn

from clinicbridge.app import create_app
from clinicbridge.core.logs import configure_logging
from clinicbridge.settings import load_settings


def main() -> None:
    settings = load_settings(port=int(sys.argv[1]))
    configure_logging(settings.log_level)
    app = create_app(settings, embedded_worker=True)

    @app.get("/bench/hello")
    def hello() -> dict[str, str]:
        return {"hello": "world"}

    uvicorn.run(app, host="127.0.0.1", port=settings.port, log_config=None, access_log=False)


if __name__ == "__main__":
    main()
