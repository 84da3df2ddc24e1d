"""The Secret type, the registry of values to redact, and the log filter."""

from __future__ import annotations

import copy
import io
import json
import logging
import pickle
import secrets
import string
from collections.abc import Iterator

import pytest
from pydantic import BaseModel

from clinicbridge.core.logs import JsonFormatter, configure_logging
from clinicbridge.core.secrets import (
    MASK,
    REGISTRY,
    Secret,
    SecretRedactingFilter,
    SecretRegistry,
)


def fresh(length: int = 32) -> str:
    return secrets.token_urlsafe(length)[:length]


# -- Secret ----------------------------------------------------------------------


def test_secret_never_prints_its_value() -> None:
    value = fresh()
    secret = Secret(value)
    assert str(secret) == MASK
    assert repr(secret) == f"Secret('{MASK}')"
    assert f"{secret}" == MASK and "%s %r" % (secret, secret) == f"{MASK} Secret('{MASK}')"  # noqa: UP031
    assert json.dumps({"k": secret}, default=str) == json.dumps({"k": MASK})
    assert value not in repr([secret]) + repr({"k": secret})
    assert secret.reveal() == value == secret.get_secret_value()


def test_secret_equality_copy_and_pickle() -> None:
    value = fresh()
    secret = Secret(value)
    assert secret == Secret(value) and secret != Secret(fresh())
    assert hash(secret) == hash(Secret(value))
    assert copy.copy(secret) is secret and copy.deepcopy(secret) is secret
    restored = pickle.loads(pickle.dumps(secret))  # noqa: S301 (our own bytes)
    assert restored.reveal() == value and restored is not secret


def test_secret_refuses_non_strings() -> None:
    with pytest.raises(TypeError):
        Secret(b"bytes")  # type: ignore[arg-type]


class Credentials(BaseModel):
    account_sid: str
    auth_token: Secret


def test_secret_as_a_pydantic_field() -> None:
    token = fresh()
    creds = Credentials(account_sid="AC123", auth_token=token)
    assert isinstance(creds.auth_token, Secret) and creds.auth_token.reveal() == token
    assert Credentials(account_sid="AC1", auth_token=Secret(token)).auth_token.reveal() == token
    assert creds.model_dump()["auth_token"] is creds.auth_token
    assert creds.model_dump(mode="json") == {"account_sid": "AC123", "auth_token": MASK}
    assert json.loads(creds.model_dump_json()) == {"account_sid": "AC123", "auth_token": MASK}
    assert token not in repr(creds) and token not in str(creds)
    from_json = Credentials.model_validate_json(
        json.dumps({"account_sid": "x", "auth_token": token})
    )
    assert from_json.auth_token.reveal() == token
    schema = Credentials.model_json_schema()["properties"]["auth_token"]
    assert schema["format"] == "password" and schema["writeOnly"] is True


# -- the registry ------------------------------------------------------------------


@pytest.mark.parametrize("length", [6, 7, 15, 16, 17, 26, 27, 40])
def test_registry_finds_a_value_at_every_offset(length: int) -> None:
    registry = SecretRegistry()
    value = "".join(secrets.choice(string.ascii_letters) for _ in range(length))
    registry.acquire(value)
    for before in range(0, 30):
        for after in (0, 1, 5, 11):
            text = "-" * before + value + "." * after
            assert registry.redact(text) == "-" * before + MASK + "." * after, (before, after)
    assert registry.find("-" * 40 + value[:-1]) == []


def test_registry_redacts_overlapping_values_longest_first() -> None:
    registry = SecretRegistry()
    long_value = "sk_live_" + "A1b2C3d4E5f6G7h8"
    registry.acquire(long_value)
    registry.acquire(long_value[8:])  # also a tracked value on its own
    assert registry.redact(f"k={long_value}; t={long_value[8:]}") == f"k={MASK}; t={MASK}"


def test_registry_ignores_short_values() -> None:
    registry = SecretRegistry()
    registry.acquire("abc12")
    assert registry.size == 0 and registry.redact("abc12") == "abc12"
    secret = Secret("zq9x1")  # too short to track globally either
    assert "zq9x1" not in REGISTRY.find("x zq9x1 x") and secret.reveal() == "zq9x1"


def test_released_values_are_retained_then_forgotten() -> None:
    registry = SecretRegistry(retain=2)
    first, second, third, live = (fresh() for _ in range(4))
    registry.acquire(live)
    for value in (first, second, third):
        registry.acquire(value)
        registry.release(value)
    registry.acquire(live)  # the next acquire retires the released ones
    # The two most recently released stay redacted; the oldest is forgotten.
    assert registry.find(first) == []
    assert registry.find(second) == [second] and registry.find(third) == [third]
    assert registry.find(live) == [live]  # live values are never evicted


def test_a_secret_is_tracked_while_alive_and_retained_after() -> None:
    value = fresh()
    secret = Secret(value)
    assert REGISTRY.find(f"token={value}") == [value]
    del secret
    Secret(fresh())  # drains releases
    assert REGISTRY.find(f"token={value}") == [value]  # retained for late log lines


# -- the log filter ---------------------------------------------------------------


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(SecretRedactingFilter())
    logger = logging.getLogger(f"test.secrets.{fresh(8)}")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_filter_redacts_message_args_and_fields(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    api_key, short = Secret("sk_live_" + fresh(24)), Secret(fresh(8))
    raw, raw_short = api_key.reveal(), short.reveal()
    logger.info(f"calling with key {raw}")
    logger.info("auth %s and %s", raw, raw_short)
    logger.info("mapping %(k)s", {"k": raw})
    logger.info(
        "webhook",
        extra={
            "fields": {
                "url": f"https://api.example.com/?key={raw}",
                "nested": {"headers": [("Authorization", f"Bearer {raw}")]},
                "token": raw_short,
                "count": 3,
                "object": RuntimeError(f"denied for {raw}"),
            }
        },
    )
    out = stream.getvalue()
    assert raw not in out and raw_short not in out
    records = lines(stream)
    assert records[0]["msg"] == f"calling with key {MASK}"
    assert records[1]["msg"] == f"auth {MASK} and {MASK}"
    assert records[2]["msg"] == f"mapping {MASK}"
    fields = records[3]
    assert fields["url"] == f"https://api.example.com/?key={MASK}"
    assert fields["nested"] == {"headers": [["Authorization", f"Bearer {MASK}"]]}
    assert fields["token"] == MASK and fields["count"] == 3
    assert fields["object"] == f"denied for {MASK}"


def test_filter_redacts_a_formatted_exception() -> None:
    secret = Secret(fresh())
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.addFilter(SecretRedactingFilter())
    logger = logging.getLogger(f"test.secrets.{fresh(8)}")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        raise ValueError(f"provider refused {secret.reveal()}")
    except ValueError:
        logger.exception("call failed")
    logger.removeHandler(handler)
    assert "call failed" in stream.getvalue() and f"provider refused {MASK}" in stream.getvalue()
    assert secret.reveal() not in stream.getvalue()


def test_filter_leaves_records_without_secrets_alone() -> None:
    Secret(fresh())  # the registry is not empty
    fields = {"tenant_id": "ten_1", "path": "/api/v1/tenant"}
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello %s", ("world",), None)
    record.fields = fields
    assert SecretRedactingFilter().filter(record) is True
    assert (record.msg, record.args, record.fields) == ("hello %s", ("world",), fields)
    assert record.fields is fields


def test_filter_does_not_format_anything_when_no_secret_is_tracked() -> None:
    class Explodes:
        def __str__(self) -> str:
            raise AssertionError("formatted")

    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%s", (Explodes(),), None)
    record.fields = {"value": Explodes()}
    assert SecretRedactingFilter(SecretRegistry()).filter(record) is True


def test_filter_survives_a_bad_format_string() -> None:
    secret = Secret(fresh())
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%d items", (secret.reveal(),), None)
    assert SecretRedactingFilter().filter(record) is True
    assert record.args == (MASK,)


@pytest.fixture
def restore_root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    access = logging.getLogger("uvicorn.access").disabled
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("uvicorn.access").disabled = access


def test_configure_logging_installs_the_filter(
    restore_root_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO")
    secret = Secret(fresh())
    # A child logger: its records reach the root handler by propagation.
    logging.getLogger("clinicbridge.test.child").warning("token %s", secret.reveal())
    out = capsys.readouterr().out
    assert secret.reveal() not in out and json.loads(out)["msg"] == f"token {MASK}"
