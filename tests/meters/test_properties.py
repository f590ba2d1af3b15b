"""Property-based checks: every SQL aggregation equals a plain-Python recomputation over the raw
events, and the hourly rollups always equal the raw events (also after rematching)."""

from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meters.aggregation import Scope, aggregate, quantity, rollup_total
from meters.models import Aggregation, UsageEvent, UsageRollup
from meters.services import usage_rematch
from tests.catalog.factories import CustomerFactory, MeterFactory, make_plan, subscribe
from tests.meters.conftest import JANUARY, NOW, record

pytestmark = pytest.mark.django_db

MINUTES = 16 * 24 * 60
PROPERTY_SETTINGS = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# Values are whole numbers or quarters: exact in SQLite's doubles too.
values = st.integers(min_value=-40, max_value=400).map(lambda n: Decimal(n) / 4)
numbers = st.one_of(st.integers(min_value=-5, max_value=50), st.just("abc"))
events = st.lists(
    st.fixed_dictionaries(
        {
            "minute": st.integers(min_value=0, max_value=14 * 24 * 60 + 12 * 60),  # up to now
            "value": values,
            "region": st.sampled_from(["eu", "us", None]),
            "n": st.one_of(st.none(), numbers),
        }
    ),
    max_size=25,
)
filters = st.sampled_from(
    [
        [],
        [{"property": "region", "operator": "in", "values": ["eu"]}],
        [{"property": "region", "operator": "not_in", "values": ["eu"]}],
        [{"property": "n", "operator": "gte", "value": 10}],
        [{"property": "n", "operator": "neq", "value": 3}],
    ]
)
windows = (
    st.tuples(st.integers(0, MINUTES), st.integers(1, MINUTES)).map(sorted).filter(lambda w: w[0] < w[1])
)


def _moment(minute: int) -> datetime:
    return JANUARY + timedelta(minutes=minute)


def _properties(event: dict) -> dict:
    found = {}
    if event["region"] is not None:
        found["region"] = event["region"]
    if event["n"] is not None:
        found["n"] = event["n"]
    return found


def _sent(event: dict) -> dict:
    return {
        "value": str(event["value"]),
        "timestamp": _moment(event["minute"]).isoformat(),
        "properties": _properties(event),
    }


def _passes(rule: dict, properties: dict) -> bool:
    present = rule["property"] in properties
    value = properties.get(rule["property"])
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    operator = rule["operator"]
    if operator in ("in", "not_in", "eq", "neq"):
        wanted = rule["values"] if "values" in rule else [rule["value"]]
        matched = present and any(
            (isinstance(w, str) and value == w) or (not isinstance(w, str) and is_number and value == w)
            for w in wanted
        )
        return matched if operator in ("in", "eq") else not matched
    if not is_number:
        return False
    limit = rule["value"]
    return {"gt": value > limit, "gte": value >= limit, "lt": value < limit, "lte": value <= limit}[operator]


def _value(meter, event: dict) -> Decimal | None:
    if not meter.property:
        return event["value"]
    number = _properties(event).get(meter.property)
    return Decimal(number) if isinstance(number, int) else None


def _expected(meter, stream: list[dict], start: datetime, end: datetime, group_by: list[str]) -> dict:
    """The aggregation computed in Python, event by event."""
    kept = [e for e in stream if all(_passes(rule, _properties(e)) for rule in meter.filters)]
    groups = defaultdict(list)
    for event in kept:
        groups[tuple(_properties(event).get(name) for name in group_by)].append(event)
    result = {}
    for key, members in groups.items():
        inside = [e for e in members if start <= _moment(e["minute"]) < end]
        numbers = [_value(meter, e) for e in inside if _value(meter, e) is not None]
        if meter.aggregation == Aggregation.WEIGHTED_SUM:
            total = _level_time(meter, members, start, min(end, NOW))
            if total is not None:
                result[key] = quantity(total / Decimal((end - start) // timedelta(microseconds=1)))
            continue
        if not inside or (meter.aggregation == Aggregation.LATEST and not numbers):
            continue
        result[key] = quantity(_reduce(meter, inside, numbers))
    return result


def _reduce(meter, inside: list[dict], numbers: list[Decimal]):
    if meter.aggregation == Aggregation.COUNT:
        return len(inside)
    if meter.aggregation == Aggregation.UNIQUE_COUNT:
        found = (_properties(event).get(meter.property) for event in inside)
        return len({(type(value) is str, value) for value in found if value is not None})
    if not numbers:
        return None
    return {
        Aggregation.SUM: sum,
        Aggregation.MAX: max,
        Aggregation.MIN: min,
        Aggregation.LATEST: lambda found: found[-1],
        Aggregation.AVG: lambda found: sum(found) / len(found),
    }[meter.aggregation](numbers)


def _level_time(meter, members: list[dict], start: datetime, until: datetime) -> Decimal | None:
    """Σ level × microseconds held in [start, until), or None when no level is held at all."""
    levels = [(e["minute"], _value(meter, e)) for e in members if _value(meter, e) is not None]
    before = [level for level in levels if _moment(level[0]) < start]
    relevant = before[-1:] + [level for level in levels if start <= _moment(level[0]) < until]
    total, held = Decimal(0), False
    for position, (minute, level) in enumerate(relevant):
        segment_start = max(_moment(minute), start)
        segment_end = _moment(relevant[position + 1][0]) if position + 1 < len(relevant) else until
        if segment_end > segment_start:
            held = True
            total += level * ((segment_end - segment_start) // timedelta(microseconds=1))
    return total if held else None


@pytest.mark.parametrize("aggregation", Aggregation.values)
@PROPERTY_SETTINGS
@given(stream=events, rules=filters, window=windows, by_region=st.booleans(), on_property=st.booleans())
def test_sql_aggregations_equal_a_python_recomputation(
    project, customer, aggregation, stream, rules, window, by_region, on_property
):
    with transaction.atomic():
        meter = MeterFactory(
            project=project, code="m", aggregation=aggregation, filters=rules, allow_negative=True,
            property="n" if on_property or aggregation == Aggregation.UNIQUE_COUNT else "",
        )  # fmt: skip
        subscription = subscribe(
            customer, make_plan(project, charges=[{"meter": meter, "unit_price": "1"}]), starts_at=JANUARY
        )
        stream = sorted(stream, key=lambda e: e["minute"])  # ids follow request order; ties keep it
        if stream:
            record(project, *(_sent(e) for e in stream), customer="cus_8fq", meter="m")
        start, end = _moment(window[0]), _moment(window[1])
        group_by = ["region"] if by_region else []
        scope = Scope(project_id=project.pk, customer_id=customer.pk, subscription_id=subscription.pk)

        rows = aggregate(meter=meter, scope=scope, start=start, end=end, now=NOW, group_by=group_by)

        assert {row.dimensions: row.quantity for row in rows} == _expected(
            meter, stream, start, end, group_by
        )
        transaction.set_rollback(True)


@PROPERTY_SETTINGS
@given(
    stream=events,
    late=st.lists(st.tuples(st.integers(0, 14 * 24 * 60), values), max_size=10),
    window=windows,
)
def test_rollups_always_equal_the_raw_events(project, customer, stream, late, window):
    with transaction.atomic():
        meter = MeterFactory(project=project, code="m", aggregation=Aggregation.SUM, allow_negative=True)
        plan = make_plan(project, charges=[{"meter": meter, "unit_price": "1"}])
        subscription = subscribe(customer, plan, starts_at=JANUARY)
        if stream:
            record(project, *(_sent(e) for e in stream), customer="cus_8fq", meter="m")
        # Events for a customer that appears later are added to the rollups when they match.
        if late:
            sent = ({"value": str(value), "timestamp": _moment(minute).isoformat()} for minute, value in late)
            record(project, *sent, customer="latecomer", meter="m")
        latecomer = CustomerFactory(project=project, external_id="latecomer")
        late_subscription = subscribe(latecomer, plan, starts_at=JANUARY)
        usage_rematch(project=project)
        usage_rematch(project=project)  # a second pass finds nothing more to add

        raw = defaultdict(lambda: [0, Decimal(0), None, None])
        for event in UsageEvent.objects.filter(project=project, subscription__isnull=False):
            bucket = raw[(event.subscription_id, event.timestamp.replace(minute=0, second=0, microsecond=0))]
            bucket[0] += 1
            bucket[1] += event.value
            bucket[2] = event.value if bucket[2] is None else min(bucket[2], event.value)
            bucket[3] = event.value if bucket[3] is None else max(bucket[3], event.value)
        rolled = {
            (row.subscription_id, row.hour): [row.event_count, row.value_sum, row.value_min, row.value_max]
            for row in UsageRollup.objects.filter(project=project)
        }
        assert rolled == {key: value for key, value in raw.items()}
        start, end = _moment(window[0]), _moment(window[1])
        for sub in (subscription, late_subscription):
            scope = Scope(project_id=project.pk, customer_id=sub.customer_id, subscription_id=sub.pk)
            expected = aggregate(meter=meter, scope=scope, start=start, end=end, now=NOW)
            assert rollup_total(meter=meter, scope=scope, start=start, end=end) == (
                expected[0].quantity if expected else 0
            )
        transaction.set_rollback(True)
