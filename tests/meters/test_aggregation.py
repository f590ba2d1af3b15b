"""Meter aggregations in SQL, with exact values, on SQLite and PostgreSQL."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from meters.aggregation import Scope, aggregate, rollup_total
from meters.models import Aggregation, UsageEvent, UsageRollup
from meters.selectors import meter_quantity
from tests.catalog.factories import CustomerFactory, MeterFactory, make_plan, subscribe
from tests.meters.conftest import JANUARY, NOW, at, record

pytestmark = pytest.mark.django_db

FEBRUARY = datetime(2026, 2, 1, tzinfo=UTC)


@pytest.fixture
def metered(project, customer):
    """A meter factory: each meter is priced by the customer's subscription."""
    plans = []

    def make(code="m", **fields):
        meter = MeterFactory(project=project, code=code, **fields)
        plans.append(meter)
        return meter

    make.subscribe = lambda: subscribe(
        customer,
        make_plan(project, charges=[{"meter": meter, "unit_price": "1"} for meter in plans]),
        starts_at=JANUARY,
    )
    return make


def _january(meter, subscription) -> Decimal:
    return meter_quantity(meter=meter, subscription=subscription, start=JANUARY, end=FEBRUARY, now=NOW)


def _total(meter, subscription, start=JANUARY, end=FEBRUARY, **options):
    scope = Scope(project_id=subscription.project_id, customer_id=subscription.customer_id,
                  subscription_id=subscription.pk)  # fmt: skip
    rows = aggregate(meter=meter, scope=scope, start=start, end=end, now=NOW, **options)
    return {(row.bucket, row.dimensions): row.quantity for row in rows}


@pytest.mark.parametrize(
    ("aggregation", "expected"),
    [
        (Aggregation.COUNT, Decimal(4)),
        (Aggregation.SUM, Decimal("11.5")),
        (Aggregation.MAX, Decimal(5)),
        (Aggregation.MIN, Decimal("-1")),
        (Aggregation.LATEST, Decimal("2.5")),
    ],
)
def test_value_aggregations(project, metered, aggregation, expected):
    meter = metered(aggregation=aggregation, allow_negative=True)
    subscription = metered.subscribe()
    record(
        project,
        {"value": 5, "timestamp": at(2)},
        {"value": -1, "timestamp": at(3)},
        {"value": 5, "timestamp": at(4)},
        {"value": "2.5", "timestamp": at(5)},
        {"value": 100, "timestamp": at(1, 0) .replace("2026-01-01", "2025-12-31")},  # before the window
        customer="cus_8fq", meter="m",
    )  # fmt: skip

    assert _total(meter, subscription) == {(None, ()): expected}
    assert _january(meter, subscription) == expected


def test_windows_are_half_open(project, metered):
    meter = metered(aggregation=Aggregation.SUM)
    subscription = metered.subscribe()
    record(
        project,
        {"value": 1, "timestamp": at(2)},
        {"value": 10, "timestamp": at(3)},
        customer="cus_8fq",
        meter="m",
    )

    assert _total(
        meter, subscription, start=datetime(2026, 1, 2, tzinfo=UTC), end=datetime(2026, 1, 3, tzinfo=UTC)
    ) == {(None, ()): Decimal(1)}


def test_latest_breaks_timestamp_ties_by_arrival(project, metered):
    meter = metered(aggregation=Aggregation.LATEST)
    subscription = metered.subscribe()
    record(
        project,
        {"value": 7, "timestamp": at(2)},
        {"value": 3, "timestamp": at(2)},
        customer="cus_8fq",
        meter="m",
    )

    assert _total(meter, subscription) == {(None, ()): Decimal(3)}


def test_no_events_is_zero_and_no_rows(project, metered):
    meter = metered(aggregation=Aggregation.MAX)
    subscription = metered.subscribe()

    assert _total(meter, subscription) == {}
    assert _january(meter, subscription) == 0


def test_a_property_is_aggregated_when_it_is_a_number(project, metered):
    total = metered("gb", aggregation=Aggregation.SUM, property="gb")
    count = metered("calls", aggregation=Aggregation.COUNT, property="gb")
    subscription = metered.subscribe()
    events = [
        {"properties": {"gb": 1.5}},
        {"properties": {"gb": "abc"}},
        {"properties": {}},
        {"properties": {"gb": 2}},
    ]
    record(project, *events, customer="cus_8fq", meter="gb", value=1)
    record(project, *events, customer="cus_8fq", meter="calls", value=1)

    assert _total(total, subscription) == {(None, ()): Decimal("3.5")}
    assert _total(count, subscription) == {(None, ()): Decimal(4)}  # count counts events


def test_unique_count_compares_json_values(project, metered):
    meter = metered(aggregation=Aggregation.UNIQUE_COUNT, property="user")
    subscription = metered.subscribe()
    users = ["a", "b", "a", 1, "1", 1.0, True, None, {"id": 1}, {"id": 1}]
    record(project, *({"properties": {"user": user}} for user in users), {"properties": {}},
           customer="cus_8fq", meter="m", value=1)  # fmt: skip

    # "a", "b", 1 (= 1.0), "1", true, {"id": 1}; null and missing do not count
    assert _total(meter, subscription) == {(None, ()): Decimal(6)}


FILTER_EVENTS = [
    {"value": 1, "properties": {"region": "eu", "gb": 5}},
    {"value": 2, "properties": {"region": "us", "gb": 50}},
    {"value": 4, "properties": {"region": "eu", "gb": "abc"}},
    {"value": 8, "properties": {"gb": 10, "ok": True}},
    {"value": 16, "properties": {"region": 7}},
]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ([{"property": "region", "operator": "in", "values": ["eu", "ap"]}], 5),
        ([{"property": "region", "operator": "not_in", "values": ["eu"]}], 26),  # missing counts as "not in"
        ([{"property": "region", "operator": "eq", "value": "us"}], 2),
        ([{"property": "region", "operator": "neq", "value": "us"}], 29),
        ([{"property": "region", "operator": "in", "values": [7]}], 16),  # numbers match numbers only
        ([{"property": "region", "operator": "in", "values": ["7"]}], 0),
        ([{"property": "gb", "operator": "gt", "value": 5}], 10),  # "abc" is not a number: no match, no error
        ([{"property": "gb", "operator": "gte", "value": 5}], 11),
        ([{"property": "gb", "operator": "lt", "value": 10}], 1),
        ([{"property": "gb", "operator": "lte", "value": 10.0}], 9),
        ([{"property": "ok", "operator": "eq", "value": True}], 8),
        (
            [
                {"property": "region", "operator": "in", "values": ["eu", "us"]},
                {"property": "gb", "operator": "gte", "value": 10},
            ],
            2,
        ),
    ],
)
def test_filters(project, metered, filters, expected):
    meter = metered(aggregation=Aggregation.SUM, filters=filters)
    subscription = metered.subscribe()
    record(project, *FILTER_EVENTS, customer="cus_8fq", meter="m")

    assert _total(meter, subscription).get((None, ()), Decimal(0)) == expected
    assert _january(meter, subscription) == expected


def test_group_by_dimensions_and_buckets(project, metered):
    meter = metered(aggregation=Aggregation.SUM)
    subscription = metered.subscribe()
    record(
        project,
        {"value": 1, "timestamp": at(2, 10, 15), "properties": {"region": "eu", "project": "web"}},
        {"value": 2, "timestamp": at(2, 10, 45), "properties": {"region": "eu", "project": "api"}},
        {"value": 4, "timestamp": at(2, 11, 5), "properties": {"region": "us", "project": "web"}},
        {"value": 8, "timestamp": at(3, 9), "properties": {"project": "web"}},
        customer="cus_8fq", meter="m",
    )  # fmt: skip
    start = datetime(2026, 1, 2, 10, 30, tzinfo=UTC)

    by_region = _total(meter, subscription, start=start, group_by=["region"])
    hourly = _total(meter, subscription, start=start, granularity="hour")
    daily = _total(meter, subscription, group_by=["project"], granularity="day")

    assert by_region == {
        (None, ("eu",)): Decimal(2),
        (None, ("us",)): Decimal(4),
        (None, (None,)): Decimal(8),
    }
    assert hourly == {
        (start, ()): Decimal(2),  # the first bucket starts where the window does
        (datetime(2026, 1, 2, 11, tzinfo=UTC), ()): Decimal(4),
        (datetime(2026, 1, 3, 9, tzinfo=UTC), ()): Decimal(8),
    }
    assert daily == {
        (datetime(2026, 1, 2, tzinfo=UTC), ("web",)): Decimal(5),
        (datetime(2026, 1, 2, tzinfo=UTC), ("api",)): Decimal(2),
        (datetime(2026, 1, 3, tzinfo=UTC), ("web",)): Decimal(8),
    }


def test_only_matched_events_of_the_scope_count(project, metered, customer):
    meter = metered(aggregation=Aggregation.SUM)
    subscription = metered.subscribe()
    other = CustomerFactory(project=project, external_id="other")
    subscribe(other, make_plan(project, charges=[{"meter": meter, "unit_price": "1"}]), starts_at=JANUARY)
    record(
        project,
        {"customer": "cus_8fq", "value": 1},
        {"customer": "other", "value": 10},
        {"customer": "cus_8fq", "value": 100, "timestamp": "2025-12-31T00:00:00Z"},  # no subscription then
        meter="m",
    )

    assert _total(meter, subscription) == {(None, ()): Decimal(1)}
    everyone = aggregate(
        meter=meter, scope=Scope(project_id=project.pk), start=JANUARY, end=FEBRUARY, now=NOW
    )
    assert [row.quantity for row in everyone] == [Decimal(11)]


# --- weighted_sum ----------------------------------------------------------------------------------


def test_weighted_sum_is_the_time_average_level_with_carry_in(project, metered):
    seats = metered(aggregation=Aggregation.WEIGHTED_SUM)
    subscription = metered.subscribe()
    record(
        project,
        {"value": 10, "timestamp": at(1, 12)},  # the level when the window opens
        {"value": 20, "timestamp": at(3)},
        {"value": 99, "timestamp": at(3)},  # same instant, earlier arrival: held for no time
        {"value": 20, "timestamp": at(3)},
        {"value": 0, "timestamp": at(4)},  # the window's end: not in it
        customer="cus_8fq", meter="m",
    )  # fmt: skip
    start, end = datetime(2026, 1, 2, tzinfo=UTC), datetime(2026, 1, 4, tzinfo=UTC)

    assert _total(seats, subscription, start=start, end=end) == {(None, ()): Decimal(15)}
    assert _total(seats, subscription, start=start, end=end, granularity="day") == {
        (start, ()): Decimal(10),
        (datetime(2026, 1, 3, tzinfo=UTC), ()): Decimal(20),
    }
    # A third of January 2's 24 hours at 10, then at 20: 16h × 10 + 8h × 20 ...
    assert _total(
        seats,
        subscription,
        start=datetime(2026, 1, 2, 16, tzinfo=UTC),
        end=datetime(2026, 1, 3, 8, tzinfo=UTC),
    ) == {(None, ()): Decimal(15)}


def test_weighted_sum_holds_no_time_after_now(project, metered):
    seats = metered(aggregation=Aggregation.WEIGHTED_SUM)
    subscription = metered.subscribe()
    record(project, {"value": 8, "timestamp": at(14)}, customer="cus_8fq", meter="m")

    # Now is noon on the 15th: half of the day is held so far.
    assert _total(
        seats, subscription, start=datetime(2026, 1, 15, tzinfo=UTC), end=datetime(2026, 1, 16, tzinfo=UTC)
    ) == {(None, ()): Decimal(4)}
    future = _total(
        seats, subscription, start=datetime(2026, 1, 16, tzinfo=UTC), end=datetime(2026, 1, 17, tzinfo=UTC)
    )
    assert future == {}


def test_weighted_sum_per_group(project, metered):
    seats = metered(aggregation=Aggregation.WEIGHTED_SUM, property="seats")
    subscription = metered.subscribe()
    record(
        project,
        {"timestamp": at(1), "properties": {"team": "a", "seats": 4}},
        {"timestamp": at(1), "properties": {"team": "b", "seats": 2}},
        {"timestamp": at(1, 12), "properties": {"team": "a", "seats": 6}},
        {"timestamp": at(1, 18), "properties": {"team": "a", "seats": "n/a"}},  # not a level: ignored
        customer="cus_8fq", meter="m", value=0,
    )  # fmt: skip

    assert _total(seats, subscription, end=datetime(2026, 1, 2, tzinfo=UTC), group_by=["team"]) == {
        (None, ("a",)): Decimal(5),
        (None, ("b",)): Decimal(2),
    }


# --- property names are data, never SQL -----------------------------------------------------------

HOSTILE_NAMES = [
    "'; DROP TABLE meters_usageevent; --",
    'say "hi"',
    "a.b",
    "$.a",
    "[0]",
    "é ü",
    "back\\slash",
    "per%cent%s",
    "-- comment",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_property_names_are_bound_parameters(project, metered, name):
    total = metered("total", aggregation=Aggregation.SUM, property=name)
    filtered = metered(
        "filtered",
        aggregation=Aggregation.COUNT,
        filters=[{"property": name, "operator": "in", "values": ["x"]}],
    )
    distinct = metered("distinct", aggregation=Aggregation.UNIQUE_COUNT, property=name)
    subscription = metered.subscribe()
    events = [{"properties": {name: 3, "other": "x"}}, {"properties": {name: "x"}}, {"properties": {name: 4}}]
    for code in ("total", "filtered", "distinct"):
        record(project, *events, customer="cus_8fq", meter=code, value=1)

    assert _total(total, subscription) == {(None, ()): Decimal(7)}
    assert _total(filtered, subscription) == {(None, ()): Decimal(1)}
    assert _total(distinct, subscription) == {(None, ()): Decimal(3)}
    assert _total(total, subscription, group_by=[name]) == {
        (None, ("3",)): Decimal(3),
        (None, ("4",)): Decimal(4),
        (None, ("x",)): Decimal(0),  # events, but no number to add
    }
    assert UsageEvent.objects.count() == 9  # the table is still there


# --- rollups ---------------------------------------------------------------------------------------


def test_rollups_hold_the_hourly_totals_of_matched_events(project, metered):
    meter = metered(aggregation=Aggregation.SUM)
    metered.subscribe()
    record(
        project,
        {"value": 1, "timestamp": at(2, 10, 5)},
        {"value": "2.5", "timestamp": at(2, 10, 55)},
        {"value": 4, "timestamp": at(2, 11)},
        {"customer": "stranger", "value": 100, "timestamp": at(2, 11)},  # unmatched: not rolled up
        customer="cus_8fq", meter="m",
    )  # fmt: skip

    rows = UsageRollup.objects.filter(meter=meter).order_by("hour")
    assert [(row.hour, row.event_count, row.value_sum, row.value_min, row.value_max) for row in rows] == [
        (datetime(2026, 1, 2, 10, tzinfo=UTC), 2, Decimal("3.5"), Decimal(1), Decimal("2.5")),
        (datetime(2026, 1, 2, 11, tzinfo=UTC), 1, Decimal(4), Decimal(4), Decimal(4)),
    ]


def test_rollup_totals_add_the_partial_hours_from_raw_events(project, metered):
    meter = metered(aggregation=Aggregation.SUM)
    subscription = metered.subscribe()
    record(
        project,
        *({"value": n, "timestamp": at(2, hour, minute)} for n, (hour, minute) in enumerate(
            [(9, 59), (10, 0), (10, 30), (11, 15), (12, 0), (12, 29), (12, 31), (13, 0)], start=1
        )),
        customer="cus_8fq", meter="m",
    )  # fmt: skip
    scope = Scope(
        project_id=project.pk, customer_id=subscription.customer_id, subscription_id=subscription.pk
    )

    def both(start, end):
        raw = aggregate(meter=meter, scope=scope, start=start, end=end, now=NOW)
        return rollup_total(meter=meter, scope=scope, start=start, end=end), (raw[0].quantity if raw else 0)

    assert both(datetime(2026, 1, 2, 9, 59, tzinfo=UTC), datetime(2026, 1, 2, 12, 30, tzinfo=UTC)) == (21, 21)
    assert both(datetime(2026, 1, 2, 10, 10, tzinfo=UTC), datetime(2026, 1, 2, 10, 40, tzinfo=UTC)) == (3, 3)
    assert both(datetime(2026, 1, 2, 10, tzinfo=UTC), datetime(2026, 1, 2, 13, tzinfo=UTC)) == (27, 27)
