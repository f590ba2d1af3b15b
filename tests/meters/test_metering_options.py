"""Metering options (issue 13): avg, bucketed aggregations, result rounding and increment-fed
weighted sums. Exact values, on SQLite and PostgreSQL (the suite runs on both)."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accounts.models import Scope as KeyScope
from meters.aggregation import Scope, aggregate, round_quantity, uses_rollups
from meters.models import Aggregation, Meter
from meters.selectors import meter_breakdown, meter_quantity, usage_summary
from tests.catalog.factories import MeterFactory, make_plan, subscribe
from tests.conftest import api_client
from tests.meters.conftest import JANUARY, NOW, at, record

pytestmark = pytest.mark.django_db

FEBRUARY = datetime(2026, 2, 1, tzinfo=UTC)
D = Decimal


@pytest.fixture
def metered(project, customer):
    """A meter factory: each meter is priced by the customer's subscription."""
    meters = []

    def make(code="m", **fields):
        meter = MeterFactory(project=project, code=code, **fields)
        meters.append(meter)
        return meter

    make.subscribe = lambda: subscribe(
        customer,
        make_plan(project, charges=[{"meter": meter, "unit_price": "1"} for meter in meters]),
        starts_at=JANUARY,
    )
    return make


def _scope(subscription) -> Scope:
    return Scope(project_id=subscription.project_id, customer_id=subscription.customer_id,
                 subscription_id=subscription.pk)  # fmt: skip


def _raw(meter, subscription, start=JANUARY, end=FEBRUARY, now=NOW, **options):
    rows = aggregate(meter=meter, scope=_scope(subscription), start=start, end=end, now=now, **options)
    return {(row.bucket, row.dimensions): row.quantity for row in rows}


def _january(meter, subscription, now=NOW) -> Decimal:
    return meter_quantity(meter=meter, subscription=subscription, start=JANUARY, end=FEBRUARY, now=now)


# --- avg -------------------------------------------------------------------------------------------


def test_avg_is_the_mean_value_from_the_events_and_from_the_rollups(project, metered):
    meter = metered(aggregation=Aggregation.AVG, allow_negative=True)
    subscription = metered.subscribe()
    record(
        project,
        {"value": 5, "timestamp": at(2, 10, 30)},
        {"value": -1, "timestamp": at(3)},
        {"value": 5, "timestamp": at(4)},
        {"value": "2.5", "timestamp": at(5)},
        customer="cus_8fq", meter="m",
    )  # fmt: skip

    assert uses_rollups(meter)
    assert _raw(meter, subscription) == {(None, ()): D("2.875")}  # 11.5 / 4
    assert _january(meter, subscription) == D("2.875")
    # A window that cuts an hour: the rollups' whole hours plus the raw events at the edge.
    start = datetime(2026, 1, 2, 10, 15, tzinfo=UTC)
    assert meter_quantity(meter=meter, subscription=subscription, start=start, end=FEBRUARY, now=NOW) == D(
        "2.875"
    )


def test_avg_of_a_property_rounds_to_twelve_places_and_is_zero_without_events(project, metered):
    meter = metered(aggregation=Aggregation.AVG, property="ms")
    subscription = metered.subscribe()

    assert _january(meter, subscription) == 0
    record(
        project,
        *({"properties": {"ms": ms}} for ms in (1, 1, 2, "slow")),  # "slow" is not a number: skipped
        customer="cus_8fq", meter="m", value=1,
    )  # fmt: skip

    assert not uses_rollups(meter)
    assert _january(meter, subscription) == D("1.333333333333")


# --- bucketed --------------------------------------------------------------------------------------


def test_bucketed_max_sums_the_hourly_peaks_flexprice_example(project, metered):
    # Flexprice's bucketed MAX example (https://docs.flexprice.io/docs/product-catalogue/features/
    # aggregation/max): hour 1 sees 8 and 4 GB (peak 8), hour 2 sees 10, 5 and 9 GB (peak 10): 18 GB.
    peak = metered("peak", aggregation=Aggregation.MAX, bucket="hour")
    plain = metered("plain", aggregation=Aggregation.MAX)
    subscription = metered.subscribe()
    events = [(8, at(2, 7, 5)), (4, at(2, 7, 40)), (10, at(2, 8, 1)), (5, at(2, 8, 30)), (9, at(2, 8, 59))]
    for code in ("peak", "plain"):
        record(project, *({"value": v, "timestamp": t} for v, t in events), customer="cus_8fq", meter=code)

    assert not uses_rollups(peak)
    assert _january(peak, subscription) == 18
    assert _january(plain, subscription) == 10
    assert _raw(peak, subscription, granularity="hour") == {
        (datetime(2026, 1, 2, 7, tzinfo=UTC), ()): D(8),
        (datetime(2026, 1, 2, 8, tzinfo=UTC), ()): D(10),
    }
    assert _raw(peak, subscription, granularity="day") == {(datetime(2026, 1, 2, tzinfo=UTC), ()): D(18)}


def test_bucketed_max_with_group_by_sums_each_groups_peaks(project, metered, customer):
    meter = metered(aggregation=Aggregation.MAX, bucket="hour", group_by=["region"])
    subscription = metered.subscribe()
    record(
        project,
        {"value": 3, "timestamp": at(2, 10, 5), "properties": {"region": "eu"}},
        {"value": 7, "timestamp": at(2, 10, 50), "properties": {"region": "eu"}},
        {"value": 4, "timestamp": at(2, 10, 20), "properties": {"region": "us"}},
        {"value": 2, "timestamp": at(2, 11, 0), "properties": {"region": "eu"}},
        {"value": 6, "timestamp": at(3, 9), "properties": {}},
        customer="cus_8fq", meter="m",
    )  # fmt: skip

    # eu: 7 (10h) + 2 (11h) = 9; us: 4; no region: 6. The total is the sum over the groups, where the
    # peak of all regions together per hour would be 7 + 2 + 6 = 15.
    assert meter_breakdown(meter=meter, subscription=subscription, start=JANUARY, end=FEBRUARY, now=NOW) == [
        ({"region": "eu"}, D(9)),
        ({"region": "us"}, D(4)),
        ({"region": None}, D(6)),
    ]
    assert _january(meter, subscription) == 19
    summary = usage_summary(
        project=project, start=JANUARY, end=FEBRUARY, meters=[meter], by_customer=True, granularity="day"
    )
    assert [(group.dimensions, group.quantity, group.buckets) for group in summary] == [
        (
            (customer.pk,),
            D(19),
            [(datetime(2026, 1, 2, tzinfo=UTC), D(13)), (datetime(2026, 1, 3, tzinfo=UTC), D(6))],
        )
    ]


@pytest.mark.parametrize(
    ("aggregation", "bucket", "expected"),
    [
        (Aggregation.MIN, "hour", D(1 + 5 + 2)),
        (Aggregation.LATEST, "hour", D(2 + 5 + 2)),
        (Aggregation.AVG, "hour", D(2 + 5 + 2)),
        (Aggregation.UNIQUE_COUNT, "hour", D(3 + 1 + 1)),
        (Aggregation.COUNT, "hour", D(5)),  # bucketing a count changes nothing
        (Aggregation.SUM, "hour", D(13)),
        (Aggregation.MAX, "day", D(5 + 2)),
        (Aggregation.UNIQUE_COUNT, "day", D(4 + 1)),
    ],
)
def test_every_bucketable_aggregation(project, metered, aggregation, bucket, expected):
    meter = metered(aggregation=aggregation, bucket=bucket, property="n")
    subscription = metered.subscribe()
    record(
        project,
        *(
            {"timestamp": timestamp, "properties": {"n": n}}
            for n, timestamp in [(1, at(2, 10, 1)), (3, at(2, 10, 2)), (2, at(2, 10, 3)), (5, at(2, 11)),
                                 (2, at(4, 23, 59))]
        ),
        customer="cus_8fq", meter="m", value=1,
    )  # fmt: skip

    assert _january(meter, subscription) == expected


def test_a_bucketed_sum_still_reads_the_rollups(project, metered):
    meter = metered(aggregation=Aggregation.SUM, bucket="day")
    subscription = metered.subscribe()
    record(project, {"value": 2, "timestamp": at(2)}, {"value": 3, "timestamp": at(3)}, customer="cus_8fq",
           meter="m")  # fmt: skip

    assert uses_rollups(meter)
    assert _january(meter, subscription) == 5


def test_a_window_that_cuts_a_bucket_keeps_the_part_inside(project, metered):
    meter = metered(aggregation=Aggregation.MAX, bucket="day")
    subscription = metered.subscribe()
    record(project, {"value": 9, "timestamp": at(2, 6)}, {"value": 4, "timestamp": at(2, 18)},
           customer="cus_8fq", meter="m")  # fmt: skip

    start = datetime(2026, 1, 2, 12, tzinfo=UTC)
    assert _raw(meter, subscription, start=start, granularity="day") == {(start, ()): D(4)}


# --- rounding --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rounding", "precision", "raw", "expected"),
    [
        # Lago's examples (https://getlago.com/docs/guide/billable-metrics/rounding): 123.4567
        # rounded with no precision is 123, with precision 2 is 123.46.
        ("round", 0, "123.4567", "123"),
        ("round", 2, "123.4567", "123.46"),
        ("ceil", 0, "123.4567", "124"),
        ("floor", 2, "123.4567", "123.45"),
        ("round", 0, "2.5", "3"),  # half up (away from zero)
        ("round", 0, "-2.5", "-3"),
        ("ceil", 0, "-1.5", "-1"),  # towards +infinity
        ("floor", 0, "-1.5", "-2"),
        ("ceil", 0, "7", "7"),
        ("ceil", 12, "0.0000000000001", "0.000000000001"),
        (None, 0, "1.25", "1.25"),
    ],
)
def test_round_quantity(rounding, precision, raw, expected):
    assert round_quantity(D(raw), rounding=rounding, precision=precision) == D(expected)


def test_rounding_applies_to_the_priced_quantity_its_breakdown_and_current_usage(project, metered, customer):
    meter = metered("gb", aggregation=Aggregation.SUM, group_by=["region"], rounding="ceil")
    subscription = metered.subscribe()
    record(
        project,
        {"value": "1.2", "properties": {"region": "eu"}},
        {"value": "0.3", "properties": {"region": "us"}},
        customer="cus_8fq", meter="gb",
    )  # fmt: skip

    assert _january(meter, subscription) == 2  # ceil(1.5): the total is rounded, not the sum of groups
    assert meter_breakdown(meter=meter, subscription=subscription, start=JANUARY, end=FEBRUARY, now=NOW) == [
        ({"region": "eu"}, D(2)),
        ({"region": "us"}, D(1)),
    ]
    usage = api_client(project, [KeyScope.BILLING_READ]).get(f"/v1/customers/{customer.public_id}/usage")
    (item,) = usage.json()["subscriptions"][0]["meters"]
    assert (item["quantity"], [part["quantity"] for part in item["breakdown"]]) == ("2", ["2", "1"])
    summary = usage_summary(project=project, start=JANUARY, end=FEBRUARY, meters=[meter], granularity="day")
    # Summary totals are rounded; their time buckets are the exact figures.
    assert [(group.quantity, group.buckets) for group in summary] == [
        (D(2), [(datetime(2026, 1, 15, tzinfo=UTC), D("1.5"))])
    ]


@settings(max_examples=200, deadline=None)
@given(
    raw=st.decimals(min_value=-(10**6), max_value=10**6, places=12, allow_nan=False, allow_infinity=False),
    precision=st.integers(min_value=0, max_value=12),
)
def test_ceil_is_at_least_the_raw_quantity_and_floor_at_most(raw, precision):
    up = round_quantity(raw, rounding="ceil", precision=precision)
    down = round_quantity(raw, rounding="floor", precision=precision)
    nearest = round_quantity(raw, rounding="round", precision=precision)
    step = D(1).scaleb(-precision)

    assert down <= raw <= up
    assert up - down in (0, step)
    assert down <= nearest <= up
    assert abs(nearest - raw) <= step / 2


# --- weighted_sum fed by increments -----------------------------------------------------------------


def test_increments_weighted_sum_lago_example(project, metered):
    # Lago's weighted sum example (https://docs.getlago.com/guide/billable-metrics/aggregation-types/
    # weighted-sum): in a 31-day month (2,678,400 s), +20 GB held for a day, then +10 (30 GB) for the
    # last 15 days: 20 × 86,400 / 2,678,400 + 30 × 1,296,000 / 2,678,400 = 15.1612903226 GB.
    exact = metered("exact", aggregation=Aggregation.WEIGHTED_SUM, weighted_input="increment")
    lago = metered(
        "lago", aggregation=Aggregation.WEIGHTED_SUM, weighted_input="increment", rounding="round",
        rounding_precision=10,
    )  # fmt: skip
    subscription = metered.subscribe()
    with time_machine.travel(FEBRUARY, tick=False):
        for code in ("exact", "lago"):
            record(project, {"value": 20, "timestamp": at(16)}, {"value": 10, "timestamp": at(17)},
                   customer="cus_8fq", meter=code)  # fmt: skip

    assert _january(exact, subscription, now=FEBRUARY) == D("15.161290322581")
    assert _january(lago, subscription, now=FEBRUARY) == D("15.1612903226")


def test_increments_before_the_window_carry_in_where_levels_would_not_add_up(project, metered):
    increments = metered("inc", aggregation=Aggregation.WEIGHTED_SUM, weighted_input="increment",
                         allow_negative=True)  # fmt: skip
    levels = metered("lvl", aggregation=Aggregation.WEIGHTED_SUM, allow_negative=True)
    subscription = metered.subscribe()
    for code in ("inc", "lvl"):
        record(
            project,
            {"value": 5, "timestamp": at(1)},
            {"value": 3, "timestamp": at(2)},
            {"value": -2, "timestamp": at(3)},
            customer="cus_8fq", meter=code,
        )  # fmt: skip
    start, end = datetime(2026, 1, 2, 12, tzinfo=UTC), datetime(2026, 1, 4, tzinfo=UTC)

    # Increments: 8 for 12 h, then 6 for 24 h. Levels: 3 for 12 h, then -2 for 24 h.
    assert _raw(increments, subscription, start=start, end=end) == {(None, ()): D("6.666666666667")}
    assert _raw(levels, subscription, start=start, end=end) == {(None, ()): D("-0.333333333333")}
    assert _raw(increments, subscription, start=start, end=end, granularity="day") == {
        (start, ()): D(8),
        (datetime(2026, 1, 3, tzinfo=UTC), ()): D(6),
    }


def test_increments_keep_a_level_per_group(project, metered):
    seats = metered(aggregation=Aggregation.WEIGHTED_SUM, weighted_input="increment", property="seats",
                    allow_negative=True)  # fmt: skip
    subscription = metered.subscribe()
    record(
        project,
        {"timestamp": at(1), "properties": {"team": "a", "seats": 4}},
        {"timestamp": at(1), "properties": {"team": "b", "seats": 2}},
        {"timestamp": at(1, 12), "properties": {"team": "a", "seats": 2}},
        {"timestamp": at(1, 18), "properties": {"team": "a", "seats": "n/a"}},  # not a number: ignored
        customer="cus_8fq", meter="m", value=0,
    )  # fmt: skip

    # a: 4 for 12 h, then 6 for 12 h = 5; b: 2.
    assert _raw(seats, subscription, end=datetime(2026, 1, 2, tzinfo=UTC), group_by=["team"]) == {
        (None, ("a",)): D(5),
        (None, ("b",)): D(2),
    }


# --- a property: bucketed max against a plain recomputation -----------------------------------------

hourly_events = st.lists(
    st.tuples(st.integers(min_value=0, max_value=5 * 24 * 60), st.integers(min_value=0, max_value=400)),
    min_size=1,
    max_size=20,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stream=hourly_events, bucket=st.sampled_from(["hour", "day"]))
def test_bucketed_max_is_the_sum_of_each_buckets_peak_and_at_least_the_overall_peak(
    project, customer, stream, bucket
):
    from django.db import transaction

    with transaction.atomic():
        meter = MeterFactory(project=project, code="m", aggregation=Aggregation.MAX, bucket=bucket)
        plain = MeterFactory(project=project, code="p", aggregation=Aggregation.MAX)
        subscription = subscribe(
            customer, make_plan(project, charges=[{"meter": meter, "unit_price": "1"},
                                                  {"meter": plain, "unit_price": "1"}]),
            starts_at=JANUARY,
        )  # fmt: skip
        sent = [{"value": v, "timestamp": (JANUARY + timedelta(minutes=m)).isoformat()} for m, v in stream]
        record(project, *sent, customer="cus_8fq", meter="m")
        record(project, *sent, customer="cus_8fq", meter="p")
        peaks: dict[datetime, int] = {}
        for minute, value in stream:
            moment = JANUARY + timedelta(minutes=minute)
            key = moment.replace(minute=0) if bucket == "hour" else moment.replace(hour=0, minute=0)
            peaks[key] = max(peaks.get(key, 0), value)

        bucketed, overall = _january(meter, subscription), _january(plain, subscription)

        assert bucketed == sum(peaks.values())
        assert bucketed >= overall == max(value for _, value in stream)
        transaction.set_rollback(True)


# --- the API ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"aggregation": "avg", "property": "ms"}, {"aggregation": "avg", "bucket": None}),
        (
            {"aggregation": "max", "bucket": "hour", "group_by": ["region"]},
            {"aggregation": "max", "bucket": "hour", "group_by": ["region"]},
        ),
        ({"aggregation": "unique_count", "property": "user", "bucket": "day"}, {"bucket": "day"}),
        ({"rounding": "ceil"}, {"rounding": "ceil", "rounding_precision": 0}),
        ({"rounding": "round", "rounding_precision": 12}, {"rounding": "round", "rounding_precision": 12}),
        ({"rounding": None, "bucket": None}, {"rounding": None, "bucket": None}),
        (
            {"aggregation": "weighted_sum", "weighted_input": "increment"},
            {"aggregation": "weighted_sum", "weighted_input": "increment"},
        ),
        ({}, {"bucket": None, "rounding": None, "rounding_precision": 0, "weighted_input": "level"}),
    ],
)
def test_meters_are_created_with_each_option(api, body, expected):
    response = api.post("/v1/meters", {"code": "x", **body}, format="json")

    assert response.status_code == 201, response.json()
    assert {name: response.json()[name] for name in expected} == expected
    meter = Meter.objects.get()
    assert {name: getattr(meter, name) for name in expected} == expected


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        ({"aggregation": "weighted_sum", "bucket": "hour"}, 422, "bucket_not_supported", "bucket"),
        ({"aggregation": "sum", "weighted_input": "increment"}, 422, "weighted_input_not_supported",
         "weighted_input"),
        ({"rounding_precision": 2}, 422, "rounding_required", "rounding_precision"),
        ({"rounding": "ceil", "rounding_precision": 13}, 400, "max_value", "rounding_precision"),
        ({"rounding": "ceil", "rounding_precision": -1}, 400, "min_value", "rounding_precision"),
        ({"bucket": "week"}, 400, "invalid_choice", "bucket"),
        ({"rounding": "up"}, 400, "invalid_choice", "rounding"),
        ({"weighted_input": None}, 400, "null", "weighted_input"),
        ({"aggregation": "average"}, 400, "invalid_choice", "aggregation"),
    ],
)  # fmt: skip
def test_bad_option_combinations_are_refused_and_nothing_is_created(api, body, status, code, param):
    response = api.post("/v1/meters", {"code": "x", **body}, format="json")

    error = response.json()["error"]
    assert (response.status_code, error["code"], error["param"]) == (status, code, param)
    assert not Meter.objects.exists()


def test_a_change_that_breaks_a_rule_is_refused_and_changes_nothing(api, project):
    meter = MeterFactory(project=project, code="seats", aggregation=Aggregation.WEIGHTED_SUM)

    response = api.patch(f"/v1/meters/{meter.public_id}", {"bucket": "day"}, format="json")

    assert (response.status_code, response.json()["error"]["code"]) == (422, "bucket_not_supported")
    meter.refresh_from_db()
    assert meter.bucket is None


def test_options_are_fixed_once_usage_is_recorded(api, project, metered):
    meter = metered(aggregation=Aggregation.SUM)
    metered.subscribe()
    record(project, {"value": 1}, customer="cus_8fq", meter="m")

    response = api.patch(f"/v1/meters/{meter.public_id}", {"rounding": "ceil"}, format="json")

    assert (response.status_code, response.json()["error"]["code"]) == (409, "meter_in_use")
    meter.refresh_from_db()
    assert meter.rounding is None


def test_every_option_is_in_the_schema_with_an_example(client):
    schema = client.get("/v1/openapi.json").json()
    components = schema["components"]["schemas"]
    written = components["MeterWriteRequest"]["properties"]
    read = components["Meter"]["properties"]

    for name in ("bucket", "rounding", "rounding_precision", "weighted_input"):
        assert name in read
        assert written[name].get("description"), name
    assert "avg" in str(written["aggregation"])
    examples = schema["paths"]["/v1/meters"]["post"]["requestBody"]["content"]["application/json"]["examples"]
    assert {"bucket": "hour"}.items() <= next(iter(examples.values()))["value"].items()
