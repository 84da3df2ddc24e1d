"""Secret values that never print, and a logging filter that redacts them.

``Secret`` wraps a credential: its repr, str and JSON form are ``**********``;
only ``reveal()`` (alias ``get_secret_value()``) returns the plaintext. Every
``Secret`` of at least ``MIN_REDACTED_LENGTH`` characters is tracked in a
process-wide registry while it is alive, and for a while after (the
``retain`` most recently released values), so that ``SecretRedactingFilter``
can mask the plaintext wherever a log line carries it: message, args, the
``fields`` dict, or a formatted exception.

Matching stays cheap as the registry grows: a value of 16 characters or more
is indexed by each of its 6-character substrings, and a text is probed only
every 11 characters (any occurrence of such a value covers one probe), so the
cost of a text without secrets does not depend on how many are tracked.
Shorter values, rare in practice, go through one regular expression.
"""

from __future__ import annotations

import hmac
import logging
import re
import threading
from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
    from pydantic.json_schema import JsonSchemaValue
    from pydantic_core import CoreSchema, core_schema

MASK = "**********"
MIN_REDACTED_LENGTH = 6  # shorter values would mask ordinary words and numbers
_GRAM = 6
_LONG = 16  # values this long are found through the gram index
_STRIDE = _LONG - _GRAM + 1  # every occurrence of a long value covers a probe


class SecretRegistry:
    """The values to redact: live ``Secret`` values plus recently released ones."""

    def __init__(self, *, retain: int = 256) -> None:
        self._lock = threading.Lock()
        self._retain = retain
        self._live: dict[str, int] = {}  # value -> number of Secret objects holding it
        self._retired: OrderedDict[str, None] = OrderedDict()
        # Filled by Secret.__del__, which may run inside garbage collection
        # while this thread holds the lock: appending needs no lock.
        self._released: deque[str] = deque()
        # Read without the lock by the filter, so entries are replaced, never mutated.
        self._grams: dict[str, tuple[str, ...]] = {}
        self._short: frozenset[str] = frozenset()
        self._short_re: tuple[frozenset[str], re.Pattern[str] | None] = (frozenset(), None)
        self.size = 0

    def acquire(self, value: str) -> None:
        """Track ``value`` for a new holder (a ``Secret`` being created)."""
        if len(value) < MIN_REDACTED_LENGTH:
            return
        with self._lock:
            if self._released:
                self._drain_released()
            count = self._live.get(value)
            if count is not None:
                self._live[value] = count + 1
                return
            self._live[value] = 1
            if value in self._retired:
                del self._retired[value]
            else:
                self._index(value)

    def release(self, value: str) -> None:
        """A holder of ``value`` is gone; the value is retired at the next acquire."""
        if len(value) >= MIN_REDACTED_LENGTH:
            self._released.append(value)

    def _drain_released(self) -> None:
        while self._released:
            value = self._released.popleft()
            count = self._live.get(value, 0)
            if count > 1:
                self._live[value] = count - 1
            elif count == 1:
                del self._live[value]
                self._retired[value] = None
        while len(self._retired) > self._retain:
            self._unindex(self._retired.popitem(last=False)[0])

    def _index(self, value: str) -> None:
        self.size += 1
        if len(value) < _LONG:
            self._short = self._short | {value}
            return
        for i in range(len(value) - _GRAM + 1):
            gram = value[i : i + _GRAM]
            held = self._grams.get(gram, ())
            if value not in held:
                self._grams[gram] = (*held, value)

    def _unindex(self, value: str) -> None:
        self.size -= 1
        if len(value) < _LONG:
            self._short = self._short - {value}
            return
        for i in range(len(value) - _GRAM + 1):
            gram = value[i : i + _GRAM]
            rest = tuple(v for v in self._grams.get(gram, ()) if v != value)
            if rest:
                self._grams[gram] = rest
            else:
                self._grams.pop(gram, None)

    def _short_pattern(self) -> re.Pattern[str] | None:
        short = self._short
        cached_for, pattern = self._short_re
        if cached_for is not short:
            ordered = sorted(short, key=len, reverse=True)
            pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None
            self._short_re = (short, pattern)
        return pattern

    def find(self, text: str) -> list[str]:
        """The tracked values that occur in ``text``, longest first."""
        if self.size == 0 or len(text) < MIN_REDACTED_LENGTH:
            return []
        found: set[str] = set()
        grams = self._grams
        if grams:
            probes = [text[i : i + _GRAM] for i in range(0, len(text) - _GRAM + 1, _STRIDE)]
            if not grams.keys().isdisjoint(probes):  # the usual answer, decided in C
                for probe in probes:
                    found.update(v for v in grams.get(probe, ()) if v in text)
        if self._short:
            pattern = self._short_pattern()
            if pattern is not None:
                found.update(pattern.findall(text))
        return sorted(found, key=len, reverse=True) if found else []

    def redact(self, text: str) -> str:
        """``text`` with every tracked value replaced by ``MASK``."""
        for value in self.find(text):
            text = text.replace(value, MASK)
        return text


REGISTRY = SecretRegistry()


class Secret:
    """A credential that shows as ``**********`` everywhere but ``reveal()``.

    Usable as a pydantic field type: input is a string, ``model_dump()`` keeps
    the ``Secret``, JSON output is ``"**********"``.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("Secret wraps a str")
        self._value = value
        REGISTRY.acquire(value)

    def __del__(self) -> None:
        if hasattr(self, "_value"):  # not when __init__ refused the value
            REGISTRY.release(self._value)

    def reveal(self) -> str:
        return self._value

    def get_secret_value(self) -> str:
        """The plaintext (the name pydantic's ``SecretStr`` uses)."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret('{MASK}')"

    def __str__(self) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    # Immutable: copies are the same object, and pickling goes through
    # __init__ so the registry's holder count stays right.
    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Secret:
        return self

    def __reduce__(self) -> tuple[type[Secret], tuple[str]]:
        return (Secret, (self._value,))

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source_type: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        from pydantic_core import core_schema

        from_str = core_schema.no_info_after_validator_function(cls, core_schema.str_schema())
        return core_schema.json_or_python_schema(
            json_schema=from_str,
            python_schema=core_schema.union_schema([core_schema.is_instance_schema(cls), from_str]),
            serialization=core_schema.plain_serializer_function_ser_schema(
                _serialize_secret, info_arg=True
            ),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "string", "format": "password", "writeOnly": True}


def _serialize_secret(value: Secret, info: core_schema.SerializationInfo) -> Secret | str:
    return MASK if info.mode_is_json() else value


def _redact_object(registry: SecretRegistry, value: object) -> object:
    """``value`` with secrets masked; the same object when it holds none."""
    if isinstance(value, str):
        return registry.redact(value) if registry.find(value) else value
    if value is None or isinstance(value, (bool, int, float, Secret)):
        return value
    if isinstance(value, dict):
        copied: dict[object, object] | None = None
        for key, item in value.items():  # keys are names chosen in code: not redacted
            new = _redact_object(registry, item)
            if new is not item:
                copied = copied if copied is not None else dict(value)
                copied[key] = new
        return value if copied is None else copied
    if isinstance(value, (list, tuple)):
        parts = [_redact_object(registry, v) for v in value]
        if all(a is b for a, b in zip(parts, value, strict=True)):
            return value
        return parts if isinstance(value, list) else tuple(parts)
    # Formatters print other objects with str(); check what they would print.
    text = str(value)
    return registry.redact(text) if registry.find(text) else value


class SecretRedactingFilter(logging.Filter):
    """Masks tracked secret values in a record before any handler formats it.

    Install it on handlers (``configure_logging`` does): a filter on a logger
    does not see records propagated from its children.
    """

    def __init__(self, registry: SecretRegistry | None = None) -> None:
        super().__init__()
        self._registry = registry or REGISTRY

    def filter(self, record: logging.LogRecord) -> bool:
        registry = self._registry
        if registry.size == 0:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: the handler reports it, without secrets
            record.msg = _redact_object(registry, record.msg)
            record.args = _redact_object(registry, record.args)  # type: ignore[assignment]
            message = ""
        fields = getattr(record, "fields", None)
        texts = [message]
        _collect_strings(fields, texts)
        # One search over everything that will be printed: the usual answer is no.
        if registry.find("\n".join(texts)):
            if registry.find(message):
                record.msg, record.args = registry.redact(message), None
            if fields is not None:
                record.fields = _redact_object(registry, fields)
        if record.exc_info and not record.exc_text:
            text = logging.Formatter().formatException(record.exc_info)
            if registry.find(text):
                # Formatters print exc_text when it is set instead of re-formatting.
                record.exc_text = registry.redact(text)
        return True


def _collect_strings(value: object, out: list[str]) -> None:
    """Append every string a formatter would print for ``value`` (as ``_redact_object`` sees it)."""
    if isinstance(value, str):
        out.append(value)
    elif value is None or isinstance(value, (bool, int, float, Secret)):
        return
    elif isinstance(value, dict):
        for item in value.values():
            _collect_strings(item, out)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _collect_strings(item, out)
    else:
        out.append(str(value))
