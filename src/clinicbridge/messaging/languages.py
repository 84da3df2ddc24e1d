"""Which language a patient gets: BCP 47 lookup with a fallback chain (RFC 4647 §3.4).

``fr-CA`` → ``fr`` → the clinic's default language (and its own truncations) → ``en``.
Tags compare case-insensitively; ``fr_CA`` is read as ``fr-CA``. A malformed tag is
skipped, so a patient with a garbage language still gets the clinic's default.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import TypeVar

T = TypeVar("T")

FINAL_FALLBACK = "en"

# Well-formed enough: a 2-3 (or 5-8) letter primary subtag, then 1-8 alphanumerics each.
_TAG = re.compile(r"^(?:[a-z]{2,3}|[a-z]{5,8})(?:-[a-z0-9]{1,8})*$")


def normalize_tag(tag: str | None) -> str | None:
    """Lower-cased, ``-`` separated tag, or None if it is empty or malformed."""
    if not tag:
        return None
    cleaned = tag.strip().replace("_", "-").lower()
    if not _TAG.match(cleaned) or cleaned in {"und", "root"}:
        return None
    return cleaned


def truncations(tag: str) -> Iterator[str]:
    """``zh-hant-tw`` → ``zh-hant-tw``, ``zh-hant``, ``zh`` (a trailing singleton goes too)."""
    subtags = tag.split("-")
    while subtags:
        yield "-".join(subtags)
        subtags.pop()
        if len(subtags) >= 2 and len(subtags[-1]) == 1:
            subtags.pop()  # "en-a-bbb-x" never ends on the singleton "a"


def fallback_chain(language: str | None, clinic_default: str | None) -> list[str]:
    """The languages to try, best first, each once, always ending with ``en``."""
    chain: list[str] = []
    for candidate in (language, clinic_default, FINAL_FALLBACK):
        tag = normalize_tag(candidate)
        if tag is None:
            continue
        for option in truncations(tag):
            if option not in chain:
                chain.append(option)
    return chain


def resolve(
    templates_available: Mapping[tuple[str, str, str], T],
    kind: str,
    channel: str,
    language: str | None,
    clinic_default: str | None,
) -> tuple[str, T] | None:
    """The first template along the fallback chain, as ``(language key, template)``.

    ``templates_available`` is keyed by ``(kind, channel, language)``; the language keys
    may use any case. Merge a clinic's own templates over the built-in defaults
    (``{**DEFAULT_TEMPLATES, **clinic_templates}``) so that at each step of the chain a
    clinic's template beats the built-in one. None when nothing matches at all.
    """
    by_language: dict[str, tuple[str, T]] = {}
    for (t_kind, t_channel, t_language), template in templates_available.items():
        if t_kind == kind and t_channel == channel:
            key = normalize_tag(t_language)
            if key is not None:
                by_language.setdefault(key, (t_language, template))
    for option in fallback_chain(language, clinic_default):
        if option in by_language:
            return by_language[option]
    return None
