"""Message templates: checked when saved, rendered in a Jinja2 sandbox.

Templates are written by clinic staff and fed patient-supplied data, so both sides are
untrusted. Three layers keep them harmless:

1. At save time (:func:`validate_template`) the template is parsed and its syntax tree
   checked: only ``namespace.field`` variables the message kind provides, a short list
   of string filters, no function or method calls, no ``_``-prefixed names, no
   includes, imports, macros, loops, ``|safe`` or ``{% autoescape false %}``, no ``*``, ``**``,
   ``%`` or ``/`` (``'x' * 10**9`` would exhaust memory; ``9**9**9`` would hang the
   compiler's constant folding). Errors name the field (``subject``, ``body``,
   ``html``) and say which variable or which line.
2. Rendering runs in :class:`jinja2.sandbox.ImmutableSandboxedEnvironment` with
   :class:`jinja2.StrictUndefined`: even a template that skipped the checks cannot
   reach ``__class__`` or mutate anything, and a missing variable is an error, never "".
3. Variables are plain dicts of plain strings (``str`` subclasses such as ``Markup`` are
   turned back into ``str`` so they are escaped like anything else).

HTML bodies are autoescaped; subjects, text bodies, SMS, WhatsApp and push are not.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from jinja2 import StrictUndefined, Template, TemplateError, TemplateSyntaxError, nodes
from jinja2.exceptions import SecurityError
from jinja2.meta import find_undeclared_variables
from jinja2.sandbox import ImmutableSandboxedEnvironment

from clinicbridge.core.errors import ClinicBridgeError, FieldError, InvalidInputError
from clinicbridge.messaging.kinds import CHANNELS, VariableSpec, variables_for

MAX_LENGTH = {"subject": 300, "body": 10_000, "html": 200_000}

ALLOWED_FILTERS = frozenset(
    {
        "capitalize",
        "d",
        "default",
        "e",
        "escape",
        "first",
        "last",
        "length",
        "lower",
        "replace",
        "striptags",
        "title",
        "trim",
        "truncate",
        "upper",
        "urlencode",
        "wordwrap",
    }
)

_FORBIDDEN_NODES: dict[type[nodes.Node], str] = {
    nodes.Call: "function and method calls are not allowed",
    nodes.Extends: "'extends' is not allowed",
    nodes.Include: "'include' is not allowed",
    nodes.Import: "'import' is not allowed",
    nodes.FromImport: "'import' is not allowed",
    nodes.Macro: "macros are not allowed",
    nodes.For: "loops are not allowed (every message variable is a single value)",
    nodes.CallBlock: "'call' blocks are not allowed",
    nodes.EvalContextModifier: "'autoescape' blocks are not allowed",
    nodes.Pow: "the '**' operator is not allowed",
    nodes.Mul: "the '*' operator is not allowed",
    nodes.Mod: "the '%' operator is not allowed",
    nodes.Div: "the '/' operator is not allowed",
    nodes.FloorDiv: "the '//' operator is not allowed",
}


class TemplateRenderError(ClinicBridgeError):
    """A saved template could not be rendered with the given variables."""

    status = 422
    type_slug = "template-render"
    title = "Message template could not be rendered"
    retryable = False


def _environment(*, html: bool) -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        undefined=StrictUndefined,
        autoescape=html,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    env.globals.clear()  # no range(), dict(), lipsum(), cycler(), namespace()
    env.filters = {name: f for name, f in env.filters.items() if name in ALLOWED_FILTERS}
    return env


TEXT_ENV = _environment(html=False)
HTML_ENV = _environment(html=True)


@dataclass(frozen=True)
class RenderedMessage:
    """``subject`` is the e-mail subject or push title; ``html`` only for e-mail."""

    text: str
    subject: str | None = None
    html: str | None = None


@dataclass(frozen=True)
class MessageTemplate:
    kind: str
    channel: str
    subject: str | None
    body: str
    html: str | None
    spec: VariableSpec
    _compiled: dict[str, Template] = field(repr=False, compare=False)

    def render(self, values: Mapping[str, object]) -> RenderedMessage:
        """Render every part; raises :class:`TemplateRenderError` naming the part."""
        context = plain_context(values)
        parts: dict[str, str] = {}
        for part, template in self._compiled.items():
            try:
                parts[part] = template.render(context)
            except SecurityError as exc:
                raise TemplateRenderError(f"{part}: refused by the sandbox: {exc}") from exc
            except TemplateError as exc:
                raise TemplateRenderError(f"{part}: {exc.message or exc}") from exc
            except (TypeError, ValueError, ArithmeticError, LookupError, RecursionError) as exc:
                # e.g. {{ booking.service + 1 }}: the template's fault, said the same way.
                raise TemplateRenderError(f"{part}: {type(exc).__name__}: {exc}") from exc
        subject = parts.get("subject")
        return RenderedMessage(
            text=parts["body"].strip(),
            subject=" ".join(subject.split()) if subject is not None else None,
            html=parts.get("html"),
        )


def plain_context(values: Mapping[str, object]) -> dict[str, object]:
    """Copy ``values`` into fresh dicts of exact ``str``; anything else is refused."""
    context: dict[str, object] = {}
    for name, value in values.items():
        if isinstance(value, str):
            context[name] = str.__str__(value)
        elif isinstance(value, Mapping):
            inner: dict[str, str] = {}
            for key, item in value.items():
                if not isinstance(item, str):
                    raise TemplateRenderError(
                        f"Variable '{name}.{key}' must be a string, not {type(item).__name__}."
                    )
                inner[str(key)] = str.__str__(item)
            context[name] = inner
        else:
            raise TemplateRenderError(
                f"Variable '{name}' must be a string or a dict of strings, "
                f"not {type(value).__name__}."
            )
    return context


def _walk(
    node: nodes.Node, parent: nodes.Node | None
) -> Iterator[tuple[nodes.Node, nodes.Node | None]]:
    yield node, parent
    for child in node.iter_child_nodes():
        yield from _walk(child, node)


def _describe(spec: VariableSpec) -> str:
    names = []
    for ns, fields in sorted(spec.items()):
        names.extend([ns] if fields is None else [f"{ns}.{f}" for f in sorted(fields)])
    return ", ".join(names) or "(none)"


def _field_access(node: nodes.Node) -> tuple[nodes.Name, str] | None:
    """``ns.field`` or ``ns['field']`` on a name, as (name node, field)."""
    if isinstance(node, nodes.Getattr) and isinstance(node.node, nodes.Name):
        return node.node, node.attr
    if (
        isinstance(node, nodes.Getitem)
        and isinstance(node.node, nodes.Name)
        and isinstance(node.arg, nodes.Const)
        and isinstance(node.arg.value, str)
    ):
        return node.node, node.arg.value
    return None


def _check_tree(tree: nodes.Template, spec: VariableSpec) -> list[str]:
    """Every problem of one parsed part, as messages."""
    problems: list[str] = []
    stored = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    for node, parent in _walk(tree, None):
        line = f"line {node.lineno}: "
        for forbidden, message in _FORBIDDEN_NODES.items():
            if isinstance(node, forbidden):
                problems.append(line + message + ".")
        if isinstance(node, nodes.Filter | nodes.Test) and node.name.startswith("_"):
            problems.append(f"{line}'{node.name}' is not allowed.")
        elif isinstance(node, nodes.Filter) and node.name not in ALLOWED_FILTERS:
            problems.append(
                f"{line}filter '{node.name}' is not allowed; "
                f"allowed: {', '.join(sorted(ALLOWED_FILTERS))}."
            )
        if isinstance(node, nodes.Getattr) and node.attr.startswith("_"):
            problems.append(f"{line}access to '{node.attr}' is not allowed.")
        if (
            isinstance(node, nodes.Getitem)
            and isinstance(node.arg, nodes.Const)
            and isinstance(node.arg.value, str)
            and node.arg.value.startswith("_")
        ):
            problems.append(f"{line}access to '{node.arg.value}' is not allowed.")
        if isinstance(node, nodes.Name) and node.name.startswith("_"):
            problems.append(f"{line}'{node.name}' is not allowed.")
        if isinstance(node, nodes.Getattr) and _field_access(node) is None:
            problems.append(
                f"{line}attribute access is only allowed as namespace.field "
                f"(e.g. booking.service), not on '.{node.attr}'."
            )
        access = _field_access(node)
        if access is not None:
            target, attr = access
            fields = spec.get(target.name)
            if target.name in stored:
                problems.append(f"{line}'{target.name}' is not a message variable.")
            elif target.name in spec and fields is None:
                problems.append(f"{line}'{target.name}' is a plain variable; it has no fields.")
            elif fields is not None and attr not in fields:
                problems.append(
                    f"{line}Unknown variable '{target.name}.{attr}'; available: {_describe(spec)}."
                )
        if (
            isinstance(node, nodes.Name)
            and node.ctx == "load"
            and node.name not in stored
            and spec.get(node.name) is not None
            and (parent is None or _field_access(parent) is None)
        ):
            problems.append(
                f"{line}'{node.name}' can only be used as {node.name}.<field>, "
                f"e.g. {node.name}.{sorted(spec[node.name] or ['field'])[0]}."
            )
    if not problems:
        # Only now: find_undeclared_variables runs the code generator, which must not
        # see what the walk above refuses (unknown filters, constant folding of **).
        for name in sorted(find_undeclared_variables(tree)):
            if name not in spec:
                problems.append(f"Unknown variable '{name}'; available: {_describe(spec)}.")
    return list(dict.fromkeys(problems))


def _required_parts(channel: str) -> tuple[set[str], set[str]]:
    """(required parts, allowed parts) per channel."""
    if channel == "email":
        return {"subject", "body"}, {"subject", "body", "html"}
    if channel == "push":
        return {"subject", "body"}, {"subject", "body"}
    return {"body"}, {"body"}


def validate_template(
    kind: str,
    channel: str,
    subject: str | None,
    body: str | None,
    html: str | None,
    *,
    variables: Iterable[str] | None = None,
) -> MessageTemplate:
    """Check a template before it is saved and return it compiled, ready to render.

    ``variables`` is only for ``custom`` messages: the dotted names the caller will
    provide. Raises :class:`InvalidInputError` with one error per bad field.
    """
    if channel not in CHANNELS:
        raise InvalidInputError.one(
            "channel", f"Unknown channel '{channel}'; expected one of: {', '.join(CHANNELS)}."
        )
    spec = variables_for(kind, variables)
    sources = {"subject": subject, "body": body, "html": html}
    required, allowed = _required_parts(channel)
    errors: list[FieldError] = []
    compiled: dict[str, Template] = {}
    for part, source in sources.items():
        if source is None or source.strip() == "":
            if part in required:
                errors.append(FieldError(part, f"A {channel} template needs a {part}.", "required"))
            continue
        if part not in allowed:
            errors.append(FieldError(part, f"A {channel} template has no {part}.", "not_allowed"))
            continue
        if len(source) > MAX_LENGTH[part]:
            errors.append(FieldError(part, f"At most {MAX_LENGTH[part]} characters.", "too_long"))
            continue
        env = HTML_ENV if part == "html" else TEXT_ENV
        try:
            tree = env.parse(source)
            problems = _check_tree(tree, spec)
        except TemplateSyntaxError as exc:
            errors.append(
                FieldError(part, f"Syntax error on line {exc.lineno}: {exc.message}", "syntax")
            )
            continue
        except RecursionError:
            errors.append(FieldError(part, "The template is nested too deeply.", "too_deep"))
            continue
        if problems:
            errors.extend(FieldError(part, p, "template") for p in problems)
            continue
        try:
            compiled[part] = env.from_string(source)
        except TemplateError as exc:
            lineno = getattr(exc, "lineno", None)
            where = f" on line {lineno}" if lineno else ""
            errors.append(FieldError(part, f"Invalid template{where}: {exc.message}", "syntax"))
    if errors:
        raise InvalidInputError(errors)
    return MessageTemplate(
        kind=kind,
        channel=channel,
        subject=subject if "subject" in compiled else None,
        body=body or "",
        html=html if "html" in compiled else None,
        spec=spec,
        _compiled=compiled,
    )


@lru_cache(maxsize=1024)
def _cached(
    kind: str,
    channel: str,
    subject: str | None,
    body: str | None,
    html: str | None,
    variables: tuple[str, ...] | None,
) -> MessageTemplate:
    return validate_template(kind, channel, subject, body, html, variables=variables)


def load_template(
    kind: str,
    channel: str,
    subject: str | None,
    body: str | None,
    html: str | None,
    *,
    variables: Iterable[str] | None = None,
) -> MessageTemplate:
    """:func:`validate_template` with a cache, for templates read back from storage."""
    declared = tuple(sorted(variables)) if variables is not None else None
    return _cached(kind, channel, subject, body, html, declared)
