"""CalDAV (RFC 4791) as a sync source, over the ``OutboundClient`` (WebDAV methods).

Discovery: ``PROPFIND`` the integration's URL for ``current-user-principal``, the
principal for ``calendar-home-set``, the home (Depth 1) for its calendar collections.
A URL that is itself a calendar collection is taken as is.

Sync, per calendar collection:

* ``sync-collection`` REPORT (RFC 6578) with the stored sync-token (empty the first
  time): changed hrefs (with their etag) and removed ones (404), and a new token. A
  token the server no longer knows (``valid-sync-token`` precondition, 403/409) means
  a full sync again.
* Servers without it: the collection's ``getctag``; when it changed, ``PROPFIND``
  Depth 1 for every resource's ``getetag``, compared with the etags stored from the
  previous round.
* Changed resources are fetched with ``calendar-multiget`` in batches and expanded
  (``ical_expand``); a changed resource replaces all of its instances.

XML is parsed with ``defusedxml`` (no entities, no external references). Requests go
only to the integration URL's own origin: the Basic credentials never travel elsewhere.
"""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET  # builds request bodies only; parsing is defusedxml's
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import defusedxml.ElementTree as SafeET

from clinicbridge.calendars.calls import refused
from clinicbridge.calendars.errors import SyncTokenExpired
from clinicbridge.calendars.events import Changes, Window, key
from clinicbridge.calendars.ical_expand import instances
from clinicbridge.core.errors import ExternalServiceError, InvalidInputError
from clinicbridge.http import OutboundClient
from clinicbridge.integrations.connector import ConnectorContext

DAV, CAL, CS = "DAV:", "urn:ietf:params:xml:ns:caldav", "http://calendarserver.org/ns/"
NS = {"d": DAV, "c": CAL, "cs": CS}
MULTIGET_BATCH = 100
MAX_ROUNDS = 50  # sync-collection answers truncated (507) are continued this many times


@dataclass(frozen=True)
class CalendarInfo:
    url: str
    name: str | None


def _q(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


def _body(root: str, props: list[tuple[str, str]], extra: list[ET.Element] | None = None,
          ns: str = DAV) -> bytes:  # fmt: skip
    element = ET.Element(_q(ns, root))
    for child in extra or []:
        element.append(child)
    prop = ET.SubElement(element, _q(DAV, "prop"))
    for prop_ns, name in props:
        ET.SubElement(prop, _q(prop_ns, name))
    return b'<?xml version="1.0" encoding="utf-8"?>' + ET.tostring(element)


class CalDavClient:
    """One calendar server for one sync round (or one discovery)."""

    def __init__(self, conn: ConnectorContext, **client: Any) -> None:
        self.integration = conn.integration_id
        self.base = conn.secret("url")
        pair = f"{conn.secret('username')}:{conn.secret('password')}".encode()
        self._auth = "Basic " + base64.b64encode(pair).decode()
        self._client: OutboundClient = conn.client(**client)  # timeouts, retry policy

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> CalDavClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport ------------------------------------------------------------------

    def same_origin(self, url: str) -> str:
        absolute = urljoin(self.base, url)
        a, b = urlsplit(absolute), urlsplit(self.base)
        if (a.scheme, a.netloc) != (b.scheme, b.netloc):
            raise InvalidInputError.one(
                "calendar", "the calendar must be on the CalDAV server of the integration",
                "other_origin",
            )  # fmt: skip
        return absolute

    def _dav(self, method: str, url: str, body: bytes, depth: str, operation: str) -> Any:
        response = self._client.request(
            method,
            self.same_origin(url),
            operation=operation,
            headers={
                "Authorization": self._auth,
                "Depth": depth,
                "Content-Type": "application/xml; charset=utf-8",
            },
            content=body,
        )
        return response

    def _multistatus(self, response: Any, operation: str) -> Any:
        if response.status_code != 207:
            raise refused(self.integration, operation, response)
        try:
            return SafeET.fromstring(response.content)
        except (SafeET.ParseError, ValueError) as exc:  # defusedxml's refusals are ValueErrors
            raise ExternalServiceError(
                f"{self.integration} {operation}: not a readable multistatus answer",
                integration=self.integration,
                retryable=False,
            ) from exc

    # -- discovery --------------------------------------------------------------------

    def discover(self) -> list[CalendarInfo]:
        """The calendars the account can see (the URL itself when it is one)."""
        props = [(DAV, "resourcetype"), (DAV, "displayname"), (DAV, "current-user-principal"),
                 (CAL, "calendar-home-set")]  # fmt: skip
        root = self._propfind(self.base, props, "0")
        own = _responses(root)
        if own and _is_calendar(own[0][1]):
            return [CalendarInfo(urljoin(self.base, own[0][0]), _text(own[0][1], "d:displayname"))]
        home = _href(own[0][1], "c:calendar-home-set") if own else None
        if home is None:
            principal = _href(own[0][1], "d:current-user-principal") if own else None
            if principal is None:
                return []
            found = _responses(self._propfind(principal, [(CAL, "calendar-home-set")], "0"))
            home = _href(found[0][1], "c:calendar-home-set") if found else None
            if home is None:
                return []
        listed = _responses(
            self._propfind(home, [(DAV, "resourcetype"), (DAV, "displayname")], "1")
        )
        return [
            CalendarInfo(urljoin(self.base, href), _text(props_el, "d:displayname"))
            for href, props_el in listed
            if _is_calendar(props_el)
        ]

    def is_calendar(self, url: str) -> bool:
        found = _responses(self._propfind(url, [(DAV, "resourcetype")], "0"))
        return bool(found) and _is_calendar(found[0][1])

    def _propfind(self, url: str, props: list[tuple[str, str]], depth: str) -> Any:
        response = self._dav("PROPFIND", url, _body("propfind", props), depth, "caldav.propfind")
        return self._multistatus(response, "caldav.propfind")

    # -- sync ---------------------------------------------------------------------------

    def fetch(
        self,
        calendar: str,
        cursor: str | None,
        state: dict[str, Any],
        window: Window,
        self_emails: frozenset[str],
    ) -> Changes:
        if not state.get("no_sync_collection"):
            try:
                return self._sync_collection(calendar, cursor, window, self_emails)
            except _Unsupported:
                pass
        return self._by_etags(calendar, state, window, self_emails)

    def _sync_collection(
        self, calendar: str, cursor: str | None, window: Window, self_emails: frozenset[str]
    ) -> Changes:
        changes = Changes(full=cursor is None)
        token, changed = cursor or "", []
        for _ in range(MAX_ROUNDS):
            extra = [ET.Element(_q(DAV, "sync-token")), ET.Element(_q(DAV, "sync-level"))]
            extra[0].text, extra[1].text = token, "1"
            body = _body("sync-collection", [(DAV, "getetag")], extra)
            response = self._dav("REPORT", calendar, body, "0", "caldav.sync_collection")
            if response.status_code in (403, 409) and token:
                raise SyncTokenExpired(self.integration)  # valid-sync-token precondition
            if response.status_code in (400, 403, 405, 501) and not token:
                raise _Unsupported()
            root = self._multistatus(response, "caldav.sync_collection")
            truncated = False
            for item in root.findall("d:response", NS):
                href = (item.findtext("d:href", default="", namespaces=NS) or "").strip()
                status = item.findtext("d:status", default="", namespaces=NS) or ""
                if not href:
                    continue
                if _same(href, calendar):
                    truncated = truncated or " 507" in status  # RFC 6578 3.6: ask again
                elif " 404" in status:
                    changes.removed_groups.append(key(urljoin(calendar, href)))
                else:
                    changed.append(urljoin(calendar, href))
            token = (root.findtext("d:sync-token", default="", namespaces=NS) or "").strip()
            if not truncated:
                break
        self._load(calendar, changed, changes, window, self_emails)
        changes.cursor = token or None
        return changes

    def _by_etags(
        self, calendar: str, state: dict[str, Any], window: Window, self_emails: frozenset[str]
    ) -> Changes:
        top = _responses(self._propfind(calendar, [(CS, "getctag"), (DAV, "sync-token")], "0"))
        ctag = _text(top[0][1], "cs:getctag") if top else None
        old: dict[str, str] = dict(state.get("etags") or {})
        full = not old and state.get("ctag") is None
        changes = Changes(full=full, state={"no_sync_collection": True, "ctag": ctag, "etags": old})
        if not full and ctag is not None and ctag == state.get("ctag"):
            return changes  # nothing changed
        listed = _responses(self._propfind(calendar, [(DAV, "getetag")], "1"))
        now = {
            urljoin(calendar, href): _text(props, "d:getetag") or ""
            for href, props in listed
            if not _same(href, calendar)
        }
        changed = [href for href, etag in now.items() if old.get(href) != etag]
        changes.removed_groups.extend(key(href) for href in old if href not in now)
        self._load(calendar, changed, changes, window, self_emails)
        changes.state = {"no_sync_collection": True, "ctag": ctag, "etags": now}
        return changes

    def _load(
        self,
        calendar: str,
        hrefs: list[str],
        changes: Changes,
        window: Window,
        self_emails: frozenset[str],
    ) -> None:
        """calendar-multiget the changed resources; each replaces its group."""
        for start in range(0, len(hrefs), MULTIGET_BATCH):
            batch = hrefs[start : start + MULTIGET_BATCH]
            element = ET.Element(_q(CAL, "calendar-multiget"))
            prop = ET.SubElement(element, _q(DAV, "prop"))
            ET.SubElement(prop, _q(DAV, "getetag"))
            ET.SubElement(prop, _q(CAL, "calendar-data"))
            for href in batch:
                ET.SubElement(element, _q(DAV, "href")).text = urlsplit(href).path
            payload = b'<?xml version="1.0" encoding="utf-8"?>' + ET.tostring(element)
            response = self._dav("REPORT", calendar, payload, "1", "caldav.multiget")
            root = self._multistatus(response, "caldav.multiget")
            for item in root.findall("d:response", NS):
                href = urljoin(calendar, item.findtext("d:href", default="", namespaces=NS) or "")
                data = item.findtext("d:propstat/d:prop/c:calendar-data", default="", namespaces=NS)
                changes.replaced_groups.append(key(href))
                if data:
                    changes.instances.extend(instances(href, data, window, self_emails))

    def window_events(
        self, calendar: str, window: Window, self_emails: frozenset[str]
    ) -> list[Any]:
        """A fresh look at [window.start, window.end): ``calendar-query`` with a
        ``time-range`` filter (RFC 4791 7.8), expanded like any resource."""
        query = ET.Element(_q(CAL, "calendar-query"))
        prop = ET.SubElement(query, _q(DAV, "prop"))
        ET.SubElement(prop, _q(DAV, "getetag"))
        ET.SubElement(prop, _q(CAL, "calendar-data"))
        vcal = ET.SubElement(ET.SubElement(query, _q(CAL, "filter")), _q(CAL, "comp-filter"))
        vcal.set("name", "VCALENDAR")
        vevent = ET.SubElement(vcal, _q(CAL, "comp-filter"))
        vevent.set("name", "VEVENT")
        span = ET.SubElement(vevent, _q(CAL, "time-range"))
        span.set("start", window.start.strftime("%Y%m%dT%H%M%SZ"))
        span.set("end", window.end.strftime("%Y%m%dT%H%M%SZ"))
        body = b'<?xml version="1.0" encoding="utf-8"?>' + ET.tostring(query)
        response = self._dav("REPORT", calendar, body, "1", "caldav.check")
        root = self._multistatus(response, "caldav.check")
        found: list[Any] = []
        for item in root.findall("d:response", NS):
            href = urljoin(calendar, item.findtext("d:href", default="", namespaces=NS) or "")
            data = item.findtext("d:propstat/d:prop/c:calendar-data", default="", namespaces=NS)
            if data:
                found.extend(instances(href, data, window, self_emails))
        return found


class _Unsupported(Exception):
    """The server does not do sync-collection on this collection."""


def _responses(root: Any) -> list[tuple[str, Any]]:
    """(href, the prop element of its 200 propstat) of each response."""
    found = []
    for item in root.findall("d:response", NS):
        href = (item.findtext("d:href", default="", namespaces=NS) or "").strip()
        for propstat in item.findall("d:propstat", NS):
            if " 200" in (propstat.findtext("d:status", default="", namespaces=NS) or ""):
                prop = propstat.find("d:prop", NS)
                if prop is not None:
                    found.append((href, prop))
    return found


def _is_calendar(prop: Any) -> bool:
    kind = prop.find("d:resourcetype", NS)
    return kind is not None and kind.find("c:calendar", NS) is not None


def _text(prop: Any, path: str) -> str | None:
    value = prop.findtext(path, default=None, namespaces=NS)
    return value.strip() if isinstance(value, str) and value.strip() else None


def _href(prop: Any, path: str) -> str | None:
    return _text(prop, f"{path}/d:href")


def _same(href: str, calendar: str) -> bool:
    return urlsplit(urljoin(calendar, href)).path.rstrip("/") == urlsplit(calendar).path.rstrip("/")


def put_event(client: CalDavClient, calendar: str, name: str, ics: bytes) -> str:
    """PUT our resource (create or replace: ClinicBridge owns it); returns its URL."""
    url = client.same_origin(urljoin(calendar if calendar.endswith("/") else calendar + "/", name))
    response = client._client.request(
        "PUT",
        url,
        operation="caldav.put",
        headers={"Authorization": client._auth, "Content-Type": "text/calendar; charset=utf-8"},
        content=ics,
    )
    if response.status_code not in (200, 201, 204):
        raise refused(client.integration, "caldav.put", response)
    return url


def delete_event(client: CalDavClient, url: str) -> None:
    response = client._client.request(
        "DELETE", client.same_origin(url), operation="caldav.delete",
        headers={"Authorization": client._auth},
    )  # fmt: skip
    if response.status_code not in (200, 204, 404):
        raise refused(client.integration, "caldav.delete", response)
