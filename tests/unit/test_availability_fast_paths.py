"""The availability engine's fast paths agree with the plain ways of doing the same thing:

- the walk over the gaps between taken intervals finds what a check of every grid start
  finds;
- the availability answer's JSON, written without datetimes or models, is what
  ``isoformat`` and ``json`` write for the same slots, in every zone and across DST.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from clinicbridge.api.scheduling import _slots_json
from clinicbridge.scheduling.availability import Found
from clinicbridge.scheduling.slots import (
    AvailabilityInput,
    ServiceRules,
    WeeklyInterval,
    _Blocks,
    _free_starts,
    compute_slots,
    slot_starts,
)
from tests.unit.test_availability_properties import inputs


@st.composite
def walks(draw: st.DrawFn) -> tuple[range, int, int, int, list[tuple[int, int]]]:
    every = draw(st.sampled_from([1, 3, 5, 15]))
    first = draw(st.integers(0, 20))
    grid = range(first, first + draw(st.integers(0, 40)) * every + 1, every)
    taken = [
        (lo, lo + draw(st.integers(1, 12)))
        for lo in draw(st.lists(st.integers(-30, 250), max_size=12))
    ]
    return grid, draw(st.integers(1, 20)), draw(st.integers(0, 6)), draw(st.integers(0, 6)), taken


@settings(max_examples=500, deadline=None)
@given(walks())
def test_the_gap_walk_finds_every_free_start_and_only_those(
    case: tuple[range, int, int, int, list[tuple[int, int]]],
) -> None:
    grid, duration, before, after, taken = case
    blocks = _Blocks(taken)
    found = [s for run in _free_starts(grid, duration, before, after, blocks.starts, blocks.ends)
             for s in run]  # fmt: skip
    expected = [
        s for s in grid if not any(a < s + duration + after and b > s - before for a, b in taken)
    ]
    assert found == expected


def test_merged_blocks_are_disjoint_and_sorted() -> None:
    blocks = _Blocks([(10, 20), (5, 12), (20, 25), (30, 31), (40, 50), (41, 45)])
    assert (blocks.starts, blocks.ends) == ([5, 30, 40], [25, 31, 50])


def reference(found: Found, tz: str | None) -> bytes:
    """The answer as built from datetimes and a dict per slot."""
    zones = {pid: ZoneInfo(tz or name) for pid, name in found.timezones.items()}
    data = [
        {
            "start": s.start.astimezone(zones[s.provider_id]).isoformat(),
            "end": s.end.astimezone(zones[s.provider_id]).isoformat(),
            "provider_id": s.provider_id,
            "seats_left": s.seats_left,
        }
        for s in found.slots()
    ]
    return json.dumps({"data": data}, separators=(",", ":")).encode()


def found_of(inp: AvailabilityInput) -> Found:
    length = inp.service.duration_minutes * 60
    rows = [(at, seats, off, inp.provider_id) for at, seats, off in slot_starts(inp)]
    return Found(rows, {inp.provider_id: inp.timezone}, length)


@settings(max_examples=200, deadline=None)
@given(inputs(), st.sampled_from([None, "UTC", "Asia/Kolkata", "America/Toronto"]))
def test_the_json_is_what_isoformat_writes(inp: AvailabilityInput, tz: str | None) -> None:
    found = found_of(inp)
    assert found.slots() == compute_slots(inp)
    assert _slots_json(found, tz) == reference(found, tz)


def test_known_offsets_are_the_zones_offsets() -> None:
    """The engine's offset for a slot is the zone's, at its start and at its end."""
    for row in found_of(_toronto_march()).rows:
        at, _, offset, _ = row
        zone = ZoneInfo("America/Toronto")
        if offset is not None:
            for ts in (at, at + 30 * 60):
                got = datetime.fromtimestamp(ts, zone).utcoffset()
                assert got is not None and got.total_seconds() == offset


def _toronto_march() -> AvailabilityInput:
    return AvailabilityInput(
        provider_id="prv_1",
        timezone="America/Toronto",
        service=ServiceRules(id="svc_a", duration_minutes=30, slot_interval_minutes=15),
        start=datetime(2026, 3, 6, tzinfo=UTC),
        end=datetime(2026, 3, 12, tzinfo=UTC),
        now=datetime(2026, 1, 1, tzinfo=UTC),
        hours=tuple(WeeklyInterval(d, m, m + 240) for d in range(7) for m in (0, 540)),
    )


def test_provider_ids_are_json_strings() -> None:
    inp = _toronto_march()
    rows = [(at, seats, off, 'prv_"1"') for at, seats, off in slot_starts(inp)][:3]
    found = Found(rows, {'prv_"1"': inp.timezone}, 30 * 60)
    assert json.loads(_slots_json(found, None))["data"][0]["provider_id"] == 'prv_"1"'
    assert _slots_json(found, None) == reference(found, None)
