"""``blocks.plan``: what a sync round changes in the stored blocks (pure function)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from clinicbridge.calendars.blocks import Stored, plan
from clinicbridge.calendars.events import Changes, Instance, Window, key, parse_instant

T = datetime(2026, 3, 10, 14, 0, tzinfo=UTC)
WINDOW = Window(T - timedelta(days=1), T + timedelta(days=30), "America/Toronto")
H = timedelta(hours=1)


def stored(**blocks: tuple[datetime, datetime, str]) -> dict[str, Stored]:
    return {k: Stored(f"bsy_{k}", s, e, g) for k, (s, e, g) in blocks.items()}


def test_incremental_round_updates_inserts_and_deletes_by_key() -> None:
    existing = stored(a=(T, T + H, "a"), b=(T, T + H, "b"), c=(T, T + H, "c"))
    changes = Changes(
        full=False,
        instances=[
            Instance("a", "a", True, start=T + H, end=T + 2 * H),  # moved
            Instance("b", "b", False, start=T, end=T + H),  # now free: goes
            Instance("d", "d", True, start=T, end=T + H),  # new
        ],
        removed=["c"],
    )
    result = plan(existing, changes, WINDOW)
    assert result.updates == [("bsy_a", T + H, T + 2 * H, "a")]
    assert sorted(result.deletes) == ["bsy_b", "bsy_c"]
    assert result.inserts == [("d", T, T + H, "d")]


def test_a_replaced_group_keeps_what_comes_back_and_drops_the_rest() -> None:
    existing = stored(x1=(T, T + H, "x"), x2=(T + 24 * H, T + 25 * H, "x"), y=(T, T + H, "y"))
    changes = Changes(
        full=False,
        instances=[Instance("x1", "x", True, start=T, end=T + H)],
        replaced_groups=["x"],
    )
    result = plan(existing, changes, WINDOW)
    assert result.deletes == ["bsy_x2"] and result.updates == [] and result.inserts == []


def test_a_full_round_deletes_what_it_did_not_see_and_clips_to_the_window() -> None:
    existing = stored(old=(T, T + H, "old"))
    far = WINDOW.end - timedelta(minutes=30)
    changes = Changes(full=True, instances=[Instance("edge", "edge", True, start=far, end=far + H)])
    result = plan(existing, changes, WINDOW)
    assert result.deletes == ["bsy_old"]
    assert result.inserts == [("edge", far, WINDOW.end, "edge")]


def test_all_day_blocks_the_local_day_across_a_dst_change() -> None:
    # 2026-03-08 is the spring-forward Sunday in Toronto: that day has 23 hours
    day = Instance("d", "d", True, first_day=date(2026, 3, 8), end_day=date(2026, 3, 9))
    window = Window(
        datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC), "America/Toronto"
    )
    span = day.span(window)
    assert span == (datetime(2026, 3, 8, 5, tzinfo=UTC), datetime(2026, 3, 9, 4, tzinfo=UTC))


def test_keys_fit_the_column_and_graph_times_parse() -> None:
    assert (
        key("short") == "short"
        and len(key("x" * 1000)) < 255
        and key("x" * 1000) == key("x" * 1000)
    )
    assert parse_instant("2026-03-10T14:00:00.0000000") == T
    assert parse_instant("2026-03-10T10:00:00-04:00") == T
