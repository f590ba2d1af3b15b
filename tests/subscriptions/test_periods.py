from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from subscriptions.periods import Period, PeriodGrid

NEW_YORK = ZoneInfo("America/New_York")


def _periods(grid: PeriodGrid, count: int) -> list[Period]:
    period = grid.period_at(grid.anchor)
    found = [period]
    for _ in range(count - 1):
        period = grid.period_after(period)
        found.append(period)
    return found


def _local(periods: list[Period], zone: ZoneInfo) -> list[tuple[str, str]]:
    return [(p.start.astimezone(zone).isoformat(), p.end.astimezone(zone).isoformat()) for p in periods]


def test_calendar_monthly_in_new_york_starts_at_local_midnight_on_the_first():
    grid = PeriodGrid(
        anchor=datetime(2026, 1, 15, 9, 30, tzinfo=NEW_YORK), timezone="America/New_York",
        interval="month", interval_count=1, anniversary=False,
    )  # fmt: skip

    assert _local(_periods(grid, 4), NEW_YORK) == [
        ("2026-01-15T09:30:00-05:00", "2026-02-01T00:00:00-05:00"),  # partial first period
        ("2026-02-01T00:00:00-05:00", "2026-03-01T00:00:00-05:00"),
        ("2026-03-01T00:00:00-05:00", "2026-04-01T00:00:00-04:00"),  # daylight saving began 8 March
        ("2026-04-01T00:00:00-04:00", "2026-05-01T00:00:00-04:00"),
    ]
    assert _periods(grid, 2)[1].start == datetime(2026, 2, 1, 5, 0, tzinfo=UTC)


def test_anniversary_on_the_31st_clamps_to_the_months_last_day_and_comes_back():
    grid = PeriodGrid(
        anchor=datetime(2026, 1, 31, 10, tzinfo=UTC),
        timezone="UTC",
        interval="month",
        interval_count=1,
        anniversary=True,
    )

    assert [p.start.date().isoformat() for p in _periods(grid, 6)] == [
        "2026-01-31", "2026-02-28", "2026-03-31", "2026-04-30", "2026-05-31", "2026-06-30",
    ]  # fmt: skip
    assert all(p.start.hour == 10 for p in _periods(grid, 6))


def test_anniversary_on_29_february_falls_on_28_february_in_common_years():
    grid = PeriodGrid(
        anchor=datetime(2028, 2, 29, tzinfo=UTC),
        timezone="UTC",
        interval="year",
        interval_count=1,
        anniversary=True,
    )

    assert [p.start.date().isoformat() for p in _periods(grid, 5)] == [
        "2028-02-29", "2029-02-28", "2030-02-28", "2031-02-28", "2032-02-29",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("interval", "count", "anchor", "starts"),
    [
        (
            "week",
            1,
            datetime(2026, 1, 7, 15, tzinfo=UTC),
            ["2026-01-07", "2026-01-12", "2026-01-19"],
        ),  # Mondays
        ("quarter", 1, datetime(2026, 2, 10, tzinfo=UTC), ["2026-02-10", "2026-04-01", "2026-07-01"]),
        ("year", 1, datetime(2026, 6, 1, tzinfo=UTC), ["2026-06-01", "2027-01-01", "2028-01-01"]),
        ("month", 2, datetime(2026, 1, 15, tzinfo=UTC), ["2026-01-15", "2026-03-01", "2026-05-01"]),
        ("day", 1, datetime(2026, 1, 1, 18, tzinfo=UTC), ["2026-01-01", "2026-01-02", "2026-01-03"]),
    ],
)
def test_calendar_boundaries(interval, count, anchor, starts):
    grid = PeriodGrid(
        anchor=anchor, timezone="UTC", interval=interval, interval_count=count, anniversary=False
    )

    assert [p.start.date().isoformat() for p in _periods(grid, 3)] == starts


def test_a_skipped_local_midnight_starts_the_period_at_the_first_instant_of_that_day():
    # Chile moves its clocks from 00:00 to 01:00 on 6 September 2026: midnight does not exist.
    santiago = ZoneInfo("America/Santiago")
    grid = PeriodGrid(
        anchor=datetime(2026, 9, 5, 12, tzinfo=santiago), timezone="America/Santiago",
        interval="day", interval_count=1, anniversary=False,
    )  # fmt: skip

    second = _periods(grid, 2)[1]

    assert second.start.astimezone(santiago).isoformat() == "2026-09-06T01:00:00-03:00"
    assert second.end.astimezone(santiago).isoformat() == "2026-09-07T00:00:00-03:00"
    assert second.end - second.start == timedelta(hours=23)


def test_period_at_finds_the_period_of_any_later_moment():
    grid = PeriodGrid(
        anchor=datetime(2026, 1, 31, tzinfo=UTC),
        timezone="UTC",
        interval="month",
        interval_count=1,
        anniversary=True,
    )

    assert grid.period_at(datetime(2026, 3, 30, 23, 59, tzinfo=UTC)) == Period(
        start=datetime(2026, 2, 28, tzinfo=UTC), end=datetime(2026, 3, 31, tzinfo=UTC)
    )
    with pytest.raises(ValueError, match="before the grid's anchor"):
        grid.period_at(datetime(2026, 1, 1, tzinfo=UTC))


# hypothesis takes naive bounds; timezones= makes the generated values aware
EARLIEST = datetime(2000, 1, 1)  # noqa: DTZ001
LATEST = datetime(2040, 1, 1)  # noqa: DTZ001
ZONES = [
    "UTC",
    "America/New_York",
    "Europe/Berlin",
    "Asia/Kolkata",
    "Australia/Lord_Howe",
    "America/Santiago",
]


@given(
    anchor=st.datetimes(min_value=EARLIEST, max_value=LATEST, timezones=st.just(UTC)),
    zone=st.sampled_from(ZONES),
    interval=st.sampled_from(["day", "week", "month", "quarter", "year"]),
    count=st.integers(min_value=1, max_value=3),
    anniversary=st.booleans(),
    offset=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=800)),
)
def test_periods_tile_time_without_gaps_or_overlaps(anchor, zone, interval, count, anniversary, offset):
    grid = PeriodGrid(
        anchor=anchor, timezone=zone, interval=interval, interval_count=count, anniversary=anniversary
    )
    moment = anchor + offset

    period = grid.period_at(moment)
    following = grid.period_after(period)

    assert moment in period
    assert period.start < period.end == following.start < following.end
    if period.start != anchor:
        assert grid.period_at(period.start - timedelta(microseconds=1)).end == period.start
