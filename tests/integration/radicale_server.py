"""A real CalDAV server for the tests: Radicale in a subprocess on a free port, with a
temporary storage folder and an htpasswd file, and a tiny WebDAV client (MKCALENDAR,
PUT, DELETE) to change calendars the way a calendar app would."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

USER, PASSWORD = "ada", "radicale-test-password"


@dataclass
class Radicale:
    url: str  # the server root
    auth: tuple[str, str]

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, auth=self.auth, timeout=10)

    def make_calendar(self, name: str) -> str:
        path = f"/{USER}/{name}/"
        body = (
            '<?xml version="1.0" encoding="utf-8"?>'
            '<C:mkcalendar xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">'
            f"<D:set><D:prop><D:displayname>{name}</D:displayname></D:prop></D:set>"
            "</C:mkcalendar>"
        )
        with self.client() as client:
            response = client.request("MKCALENDAR", path, content=body)
            assert response.status_code == 201, response.text
        return f"{self.url}{path}"

    def put(self, calendar_url: str, name: str, ics: str) -> None:
        with self.client() as client:
            response = client.put(
                f"{calendar_url}{name}.ics",
                content=ics.replace("\n", "\r\n"),
                headers={"Content-Type": "text/calendar; charset=utf-8"},
            )
            assert response.status_code in (201, 204), response.text

    def delete(self, calendar_url: str, name: str) -> None:
        with self.client() as client:
            assert client.delete(f"{calendar_url}{name}.ics").status_code in (200, 204)


@pytest.fixture
def radicale(tmp_path: Path) -> Iterator[Radicale]:
    port = free_port()
    users = tmp_path / "users"
    users.write_text(f"{USER}:{PASSWORD}\n")
    process = subprocess.Popen(
        [
            sys.executable, "-m", "radicale",
            "--server-hosts", f"127.0.0.1:{port}",
            "--storage-filesystem-folder", str(tmp_path / "collections"),
            "--auth-type", "htpasswd",
            "--auth-htpasswd-filename", str(users),
            "--auth-htpasswd-encryption", "plain",
            "--rights-type", "owner_only",
            "--logging-level", "warning",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    while True:
        try:
            httpx.get(url + "/", timeout=1)
            break
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("radicale did not start") from None
            time.sleep(0.1)
    try:
        yield Radicale(url, (USER, PASSWORD))
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        if process.stderr is not None:
            process.stderr.close()
