"""The canonical encoding, the hash and the masked diff (no database)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from clinicbridge.audit import GENESIS, MASK, append, diff_of, event_hash, scrub
from clinicbridge.audit.chain import FIELDS, canonical_json, canonical_time, encode

EVENT: dict[str, Any] = {
    "id": "aud_01JD3Q7X8Y9Z0A1B2C3D4E5F6G",
    "tenant_id": "ten_01JD3Q7X8Y9Z0A1B2C3D4E5F6G",
    "seq": 7,
    "occurred_at": datetime(2026, 1, 5, 9, 30, 0, 250, tzinfo=UTC),
    "actor_type": "api_key",
    "actor_id": "key_01JD3Q7X8Y9Z0A1B2C3D4E5F6G",
    "action": "user.update",
    "resource_type": "user",
    "resource_id": "usr_01JD3Q7X8Y9Z0A1B2C3D4E5F6G",
    "request_id": "req-42",
    "ip": "203.0.113.7",
    "outcome": "success",
    "phi": False,
    "diff": {"role": {"new": "front_desk", "old": "clinician"}},
    "prev_hash": "ab" * 32,
}


def _hash(**changes: Any) -> str:
    event = EVENT | changes
    return event_hash(*(event[name] for name in FIELDS))


def test_encoding_is_the_documented_one() -> None:
    expected = "\x1f".join(
        [
            "cb.audit.v1",
            EVENT["id"],
            EVENT["tenant_id"],
            "7",
            "2026-01-05 09:30:00.000250",
            "api_key",
            EVENT["actor_id"],
            "user.update",
            "user",
            "=" + EVENT["resource_id"],
            "=req-42",
            "=203.0.113.7",
            "success",
            "0",
            '{"role": {"new": "front_desk", "old": "clinician"}}',
            "ab" * 32,
        ]
    ).encode()
    assert _hash() == hashlib.sha256(expected).hexdigest()
    # A fixed vector: an accidental change of the encoding breaks every stored chain.
    assert _hash() == "52722469867f5349a7416bb7053a35582241a2dd316608a65c8382fcbf1eb195"


@pytest.mark.parametrize(
    ("field", "other"),
    [
        ("id", "aud_01JD3Q7X8Y9Z0A1B2C3D4E5F6H"),
        ("tenant_id", ""),
        ("seq", 8),
        ("occurred_at", EVENT["occurred_at"] + timedelta(microseconds=1)),
        ("actor_type", "user"),
        ("actor_id", "key_other"),
        ("action", "user.delete"),
        ("resource_type", "api_key"),
        ("resource_id", None),
        ("resource_id", ""),
        ("request_id", None),
        ("ip", None),
        ("outcome", "failure"),
        ("phi", True),
        ("diff", None),
        ("diff", {"role": {"new": "owner", "old": "clinician"}}),
        ("prev_hash", GENESIS),
    ],
)
def test_every_field_changes_the_hash(field: str, other: Any) -> None:
    assert _hash(**{field: other}) != _hash()


def test_null_and_empty_string_differ() -> None:
    assert _hash(resource_id=None) != _hash(resource_id="")
    assert _hash(request_id=None, ip="x") != _hash(request_id="x", ip=None)


def test_time_is_utc_with_microseconds() -> None:
    montreal = timezone(timedelta(hours=-5))
    moment = datetime(2026, 1, 5, 4, 30, tzinfo=montreal)
    assert canonical_time(moment) == "2026-01-05 09:30:00.000000"
    assert _hash(occurred_at=moment) == _hash(occurred_at=moment.astimezone(UTC))
    with pytest.raises(ValueError, match="timezone-aware"):
        canonical_time(datetime(2026, 1, 5))


def test_canonical_json_sorts_keys_at_every_depth() -> None:
    value = {"b": [1, {"z": None, "a": "é"}], "a": True}
    assert canonical_json(value) == json.dumps(value, sort_keys=True)
    assert canonical_json(value) == '{"a": true, "b": [1, {"a": "\\u00e9", "z": null}]}'
    assert _hash(diff={"x": 1, "y": 2}) == _hash(diff={"y": 2, "x": 1})
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


def test_encode_takes_text_time_and_json() -> None:
    fields = [EVENT[name] for name in FIELDS]
    fields[3] = canonical_time(EVENT["occurred_at"])
    fields[13] = canonical_json(EVENT["diff"])
    assert hashlib.sha256(encode(*fields)).hexdigest() == _hash()


def test_diff_keeps_only_changed_fields() -> None:
    before = {"name": "Maple", "timezone": "UTC", "currency": "CAD"}
    after = {"name": "Maple Clinic", "timezone": "UTC", "currency": "CAD"}
    assert diff_of(before, after) == {"name": {"old": "Maple", "new": "Maple Clinic"}}
    assert diff_of(before, dict(before)) is None
    assert diff_of({}, {"role": "owner"}) == {"role": {"new": "owner"}}
    assert diff_of({"role": "owner"}, {}) == {"role": {"old": "owner"}}


def test_diff_masks_secrets_by_name_and_never_keeps_them() -> None:
    diff = diff_of(
        {"password": "$argon2id$v=19$old", "clientSecret": "s1", "key_hash": "aa", "ok": 1},
        {"password": "$argon2id$v=19$new", "clientSecret": "s2", "key_hash": "bb", "ok": 2},
    )
    assert diff == {
        "clientSecret": {"old": MASK, "new": MASK},
        "key_hash": {"old": MASK, "new": MASK},
        "ok": {"old": 1, "new": 2},
        "password": {"old": MASK, "new": MASK},
    }
    assert "argon2" not in json.dumps(diff)


def test_diff_masks_phi_fields_and_nested_secrets_and_secret_looking_values() -> None:
    diff = diff_of(
        {"notes": "asthma", "settings": {"api_key": "sk_live_abc", "region": "ca"}},
        {
            "notes": "asthma, diabetes",
            "settings": {"api_key": "sk_live_def", "region": "us"},
            "label": "cb_live_0123456789",
        },
        phi_fields=["notes"],
    )
    assert diff is not None
    assert diff["notes"] == {"old": MASK, "new": MASK}
    assert diff["settings"]["new"] == {"api_key": MASK, "region": "us"}
    assert diff["label"] == {"new": MASK}
    text = json.dumps(diff)
    assert "asthma" not in text and "sk_live" not in text and "cb_live" not in text


def test_diff_of_a_secret_set_from_nothing_shows_that_it_was_set() -> None:
    assert diff_of({"password": None}, {"password": "hunter2hunter2"}) == {
        "password": {"old": None, "new": MASK}
    }


def test_diff_values_become_json() -> None:
    moment = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    diff = diff_of({"at": None, "tags": None}, {"at": moment, "tags": frozenset({"b", "a"})})
    assert diff == {
        "at": {"old": None, "new": "2026-01-05T09:00:00+00:00"},
        "tags": {"old": None, "new": ["a", "b"]},
    }
    with pytest.raises(TypeError, match="audit diff"):
        diff_of({}, {"x": object()})


def test_scrub_is_idempotent() -> None:
    diff = diff_of({"token": "a"}, {"token": "b"})
    assert scrub(diff) == diff == {"token": {"old": MASK, "new": MASK}}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"actor_type": "robot"}, "actor_type"),
        ({"outcome": "maybe"}, "outcome"),
        ({"action": "User Update"}, "action"),
        ({"resource_type": ""}, "resource_type"),
        ({"resource_id": "usr_1\x1fforged"}, "resource_id"),
        ({"request_id": "r" * 129}, "request_id"),
        ({"occurred_at": datetime(2026, 1, 5)}, "timezone-aware"),
    ],
)
def test_append_refuses_bad_fields_before_touching_the_database(
    change: dict[str, Any], message: str
) -> None:
    fields: dict[str, Any] = {
        "tenant_id": "ten_x",
        "actor_type": "user",
        "actor_id": "usr_x",
        "action": "user.update",
        "resource_type": "user",
        "occurred_at": EVENT["occurred_at"],
    }
    session: Any = None  # never reached
    with pytest.raises(ValueError, match=message):
        append(session, **(fields | change))
