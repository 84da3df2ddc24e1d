"""Render every built-in message template (each kind, channel and language) many times.

Per template: p50/p99 of one render (all parts: subject, text and, for e-mail, HTML),
compiled once beforehand as a serving process would (``load_template`` caches).
Target: p99 <= 1 ms for every template. Baseline in the same run, interleaved sample
by sample: ``str.format_map`` of the same text with the same values (HTML values
escaped with ``markupsafe.escape``, as autoescape does), i.e. the least a renderer
can cost. For context (no target): building the variables (Babel date formatting)
and the save-time check (``validate_template``: parse, tree walk, compile).
Prints one JSON object; exit 0 on pass.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import partial
from typing import Any

from markupsafe import escape

from clinicbridge.messaging.defaults import DEFAULT_TEMPLATES, DefaultTemplate
from clinicbridge.messaging.templates import load_template, validate_template
from clinicbridge.messaging.variables import Variables, booking_variables, payment_variables

TARGET_P99_US = 1000.0

_VAR = re.compile(r"\{\{\s*(\w+)\.(\w+)\s*\}\}")
_BLOCK = re.compile(r"\{%.*?%\}\n?")


def _values(kind: str, language: str) -> Variables:
    if kind == "payment.receipt":
        return payment_variables(
            language=language,
            clinic_default_language="en",
            clinic_name="Maple Physio & Rehab",
            clinic_phone="+1 514 555 0100",
            patient_first_name="Amélie",
            amount_minor=12550,
            currency="CAD",
            receipt_url="https://cb.example/r/01JD3ABCDEFGHJKMNPQRSTVWXY",
        )
    return booking_variables(
        language=language,
        clinic_default_language="en",
        timezone="America/Toronto",
        clinic_name="Maple Physio & Rehab",
        clinic_phone="+1 514 555 0100",
        patient_first_name="Amélie",
        start=datetime(2026, 3, 3, 19, 30, tzinfo=UTC),
        previous_start=datetime(2026, 3, 2, 14, 0, tzinfo=UTC),
        service="Physiotherapy",
        provider="Dr Provider",
        location="Main",
        confirmation_code="K7Q2M",
        confirm_url="https://cb.example/c/01JD3ABCDEFGHJKMNPQRSTVWXY",
        cancel_url="https://cb.example/x/01JD3ABCDEFGHJKMNPQRSTVWXY",
        video_url="https://meet.example/j/123456789",
    )


def _format_string(source: str) -> str:
    """The same text as a ``str.format`` template: braces doubled, blocks dropped."""
    text = _BLOCK.sub("", source)
    parts, last = [], 0
    for match in _VAR.finditer(text):
        parts.append(text[last : match.start()].replace("{", "{{").replace("}", "}}"))
        parts.append(f"{{{match.group(1)}[{match.group(2)}]}}")
        last = match.end()
    parts.append(text[last:].replace("{", "{{").replace("}", "}}"))
    return "".join(parts)


def _baseline(t: DefaultTemplate) -> Callable[[Mapping[str, Any]], object]:
    subject = _format_string(t.subject) if t.subject else None
    body = _format_string(t.body)
    html = _format_string(t.html) if t.html else None

    def render(values: Mapping[str, Any]) -> object:
        out = [body.format_map(values)]
        if subject is not None:
            out.append(subject.format_map(values))
        if html is not None:
            escaped = {k: {f: escape(v) for f, v in d.items()} for k, d in values.items()}
            out.append(html.format_map(escaped))
        return out

    return render


def _us(fn: Callable[[], object]) -> float:
    start = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - start) / 1000


def _summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_us": round(statistics.median(ordered), 2),
        "p99_us": round(ordered[max(0, int(len(ordered) * 0.99) - 1)], 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=2000)
    args = parser.parse_args()

    per_template: dict[str, Any] = {}
    all_render: list[float] = []
    all_base: list[float] = []
    variables_us: list[float] = []
    validate_us: list[float] = []
    for (kind, channel, language), source in sorted(DEFAULT_TEMPLATES.items()):
        compiled = load_template(kind, channel, source.subject, source.body, source.html)
        baseline = _baseline(source)
        values = _values(kind, language)
        for _ in range(200):  # warm-up
            compiled.render(values)
            baseline(values)
        render_once = partial(compiled.render, values)
        baseline_once = partial(baseline, values)
        render_samples, base_samples = [], []
        for _ in range(args.iterations):
            render_samples.append(_us(render_once))
            base_samples.append(_us(baseline_once))
        build = partial(_values, kind, language)
        check = partial(validate_template, kind, channel, source.subject, source.body, source.html)
        for _ in range(20):
            variables_us.append(_us(build))
            validate_us.append(_us(check))
        render = _summary(render_samples)
        per_template[f"{kind}/{channel}/{language}"] = {
            **render,
            "baseline_str_format": _summary(base_samples),
            "pass": render["p99_us"] <= TARGET_P99_US,
        }
        all_render += render_samples
        all_base += base_samples

    overall = _summary(all_render)
    baseline_overall = _summary(all_base)
    worst = max(per_template.items(), key=lambda item: item[1]["p99_us"])
    result = {
        "benchmark": "template_render",
        "templates": len(per_template),
        "iterations_per_template": args.iterations,
        "render_all_templates": overall,
        "baseline_str_format_all_templates": baseline_overall,
        "overhead_ratio_p50": round(overall["p50_us"] / baseline_overall["p50_us"], 2),
        "worst_template": {"name": worst[0], "p99_us": worst[1]["p99_us"]},
        "build_variables_babel": _summary(variables_us),
        "validate_at_save_time": _summary(validate_us),
        "per_template": per_template,
        "target": "p99 <= 1 ms per render, every template",
        "target_p99_us": TARGET_P99_US,
        "pass": all(t["pass"] for t in per_template.values()),
    }
    print(json.dumps(result, indent=2))
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
