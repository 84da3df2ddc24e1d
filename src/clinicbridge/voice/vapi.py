"""Vapi's server messages: read a ``tool-calls`` message, write its answer.

A ``tool-calls`` message::

    {"message": {"type": "tool-calls",
                 "call": {"id": "...", "customer": {"number": "+1..."}},
                 "customer": {"number": "+1..."},
                 "toolCallList": [{"id": "call_1", "type": "function",
                                   "function": {"name": "checkAvailability",
                                                "arguments": {...} or "{...}"}}]}}

is answered ``{"results": [{"toolCallId": "call_1", "result": ...}]}``, one result
per tool call, in order. Older messages list ``toolWithToolCallList[].toolCall``
instead; both are read. A defect in one tool call (no name, arguments that are
not a JSON object) is that call's spoken error, not the whole request's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from clinicbridge.core.errors import FieldError, InvalidInputError

TOOL_CALLS = "tool-calls"
MAX_TOOL_CALLS = 20  # one model turn; more is not a real assistant
MAX_ID_LENGTH = 128  # the log's column width


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]
    defect: str | None = None  # why this call cannot run, fit to be spoken


@dataclass(frozen=True)
class ServerMessage:
    type: str
    call_id: str
    caller_number: str | None
    tool_calls: list[ToolCall] = field(default_factory=list)


def _invalid(name: str, message: str) -> InvalidInputError:
    return InvalidInputError([FieldError(name, message, "invalid")])


def parse(body: bytes) -> ServerMessage:
    """The message in ``body``; InvalidInputError (problem+json 422) naming the field
    when it is not a Vapi server message at all."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise _invalid("body", "is not JSON") from None
    message = payload.get("message") if isinstance(payload, dict) else None
    if not isinstance(message, dict):
        raise _invalid("message", "required: a Vapi server message object")
    kind = message.get("type")
    if not isinstance(kind, str) or not kind:
        raise _invalid("message.type", "required: a string")
    raw_call = message.get("call")
    call: dict[str, Any] = raw_call if isinstance(raw_call, dict) else {}
    call_id = call.get("id")
    if kind == TOOL_CALLS and (not isinstance(call_id, str) or not call_id):
        raise _invalid("message.call.id", "required: the call's id")
    caller = _caller_number(message, call)
    if kind != TOOL_CALLS:
        return ServerMessage(kind, str(call_id or ""), caller)
    raw_calls = _raw_tool_calls(message)
    if len(raw_calls) > MAX_TOOL_CALLS:
        raise _invalid("message.toolCallList", f"at most {MAX_TOOL_CALLS} tool calls")
    calls = [_tool_call(raw, i) for i, raw in enumerate(raw_calls)]
    return ServerMessage(kind, str(call_id)[:MAX_ID_LENGTH], caller, calls)


def _caller_number(message: dict[str, Any], call: dict[str, Any]) -> str | None:
    for holder in (message.get("customer"), call.get("customer")):
        if isinstance(holder, dict):
            number = holder.get("number")
            if isinstance(number, str) and number.strip():
                return number.strip()[:40]
    return None


def _raw_tool_calls(message: dict[str, Any]) -> list[Any]:
    listed = message.get("toolCallList")
    if isinstance(listed, list):
        return listed
    wrapped = message.get("toolWithToolCallList")
    if isinstance(wrapped, list):
        return [w.get("toolCall") if isinstance(w, dict) else w for w in wrapped]
    raise _invalid("message.toolCallList", "required: a list of tool calls")


def _tool_call(raw: Any, index: int) -> ToolCall:
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), str) or not raw["id"]:
        # Without its id the answer cannot be matched to the call: a request-level error.
        raise _invalid(f"message.toolCallList[{index}].id", "required: the tool call's id")
    call_id = raw["id"][:MAX_ID_LENGTH]
    function = raw.get("function")
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str) or not name:
        return ToolCall(call_id, "", {}, "I could not tell which action to take.")
    arguments: Any = function.get("arguments") if isinstance(function, dict) else None
    if arguments is None or arguments == "":
        arguments = {}
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return ToolCall(call_id, name[:64], {}, "I could not read the details of that request.")
    if not isinstance(arguments, dict):
        return ToolCall(call_id, name[:64], {}, "I could not read the details of that request.")
    return ToolCall(call_id, name[:64], arguments)


def answer(results: list[tuple[str, str]]) -> dict[str, Any]:
    """Vapi's answer to a ``tool-calls`` message: one result per tool call id."""
    return {"results": [{"toolCallId": cid, "result": result} for cid, result in results]}
