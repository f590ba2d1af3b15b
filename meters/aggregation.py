# ruff: noqa: S608 - the SQL is assembled from this module's own fragments; every value, property
# names included, is a bound parameter.
"""Meter aggregations in SQL, for PostgreSQL and SQLite, over any [start, end) window.

The database does the work (GROUP BY, window functions); Python only converts the few result
rows to Decimal. One builder writes every query; a small dialect class supplies the few
expressions that differ. Property names from users are always bound parameters, never part of
the SQL text: PostgreSQL reads them with `properties -> %s`, SQLite through `json_each`, whose
`key` column is compared with a parameter (so no JSON-path quoting is involved at all).

Semantics (docs/usage.md, "Aggregations"):

- Only matched events count (they have a subscription), and only those passing the meter's
  filters. The aggregated value is the event's `value`, or the meter's `property` when it is a
  JSON number (events where it is missing or not a number are ignored, except by `count`).
- `count` events; `sum`, `max`, `min`, `avg` values; `unique_count` distinct JSON values of the
  property ("1" and 1 differ, 1 and 1.0 do not); `latest` the value of the last event (timestamp,
  then id).
- A bucketed meter (`bucket` hour or day) runs its aggregation per UTC bucket, per subscription
  and per group of the meter's `group_by`, and sums those results: "the peak of each hour, summed".
- `weighted_sum`: each event's value is a level held from its timestamp until the next event of
  the same group (the level before the window carries in); the result is Σ level × time held /
  window length, the time-average level ("seat-months" for a month). Time after `now` is not
  held yet, so the figure for a running period grows until the period ends. With
  `weighted_input` "increment" each value changes the level instead: the level is the running
  sum of every earlier value (from the start of time, so the increments before the window carry in).
- `period_totals` is what pricing and the usage API read: it answers from the hourly rollups when
  it can, and applies the meter's rounding, once, to each result.
- Buckets are UTC hours or days; an empty group or bucket has no row. No events → 0.
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Context, Decimal
from typing import Any

from django.db import connection
from django.utils.dateparse import parse_datetime

from meters.models import VALUE_PLACES, Aggregation, FilterOperator, Meter, Rounding, WeightedInput

HOUR, DAY = "hour", "day"
GRANULARITY_STEPS = {HOUR: timedelta(hours=1), DAY: timedelta(days=1)}
# The hourly rollups hold count, sum, min and max, so they answer these (avg = sum / count).
ROLLUP_AGGREGATIONS = frozenset(
    {Aggregation.COUNT, Aggregation.SUM, Aggregation.MIN, Aggregation.MAX, Aggregation.AVG}
)
# Summing per-bucket counts or sums gives the plain count or sum: rollups still answer those.
BUCKET_INVARIANT_AGGREGATIONS = frozenset({Aggregation.COUNT, Aggregation.SUM})
# Aggregations a meter may bucket. weighted_sum is already a time average: per bucket, summed, it
# would count each bucket's average once however short the bucket, which means nothing.
BUCKETABLE_AGGREGATIONS = frozenset(set(Aggregation) - {Aggregation.WEIGHTED_SUM})
_ROUNDING_MODES = {Rounding.ROUND: ROUND_HALF_UP, Rounding.CEIL: ROUND_CEILING, Rounding.FLOOR: ROUND_FLOOR}
_PLACE = Decimal(1).scaleb(-VALUE_PLACES)
_CONTEXT = Context(prec=60, rounding=ROUND_HALF_UP)
_SQLITE_BUCKET_FORMATS = {HOUR: "%Y-%m-%d %H:00:00", DAY: "%Y-%m-%d 00:00:00"}


def quantity(raw: Any) -> Decimal:
    """A database number (Decimal on PostgreSQL; int or float on SQLite) as a Decimal with at most
    VALUE_PLACES decimal places. SQLite keeps fractional values as doubles, so there the last
    places absorb binary noise; PostgreSQL is exact."""
    if raw is None:
        return Decimal(0)
    if isinstance(raw, int):
        return Decimal(raw)
    value = raw if isinstance(raw, Decimal) else Decimal(repr(raw))
    # normalize() drops trailing zeros; adding 0 turns 1E+3 back into 1000 (and -0 into 0).
    return _CONTEXT.add(value.quantize(_PLACE, context=_CONTEXT).normalize(_CONTEXT), 0)


def round_quantity(value: Decimal, *, rounding: str | None, precision: int) -> Decimal:
    """A meter result rounded as the meter says: half up, up (ceiling) or down (floor) to
    `precision` decimal places; unchanged without rounding."""
    if not rounding:
        return value
    step = Decimal(1).scaleb(-precision)
    return quantity(value.quantize(step, rounding=_ROUNDING_MODES[rounding], context=_CONTEXT))


@dataclass(frozen=True)
class Scope:
    """Whose events: a project, optionally one customer, optionally one of their subscriptions
    (give the customer too: it leads the index the query uses)."""

    project_id: int
    customer_id: int | None = None
    subscription_id: int | None = None


@dataclass(frozen=True)
class Row:
    bucket: datetime | None  # start of the bucket (clipped to the window); None without granularity
    dimensions: tuple  # the customer id first when grouped by customer, then property values (text)
    quantity: Decimal


class _PostgreSQL:
    def number(self, name: str) -> tuple[str, list]:
        return (
            "(CASE WHEN jsonb_typeof(e.properties -> %s) = 'number' THEN (e.properties ->> %s)::numeric END)",
            [name, name],
        )

    def distinct_value(self, name: str) -> tuple[str, list]:
        return "NULLIF(e.properties -> %s, 'null'::jsonb)", [name]

    def text(self, name: str) -> tuple[str, list]:
        return "(e.properties ->> %s)", [name]

    def matches(self, name: str, strings: list, numbers: list, booleans: list) -> tuple[str, list]:
        parts, params = [], []
        if strings:
            parts.append("(jsonb_typeof(e.properties -> %s) = 'string' AND e.properties ->> %s = ANY(%s))")
            params += [name, name, strings]
        if numbers:
            parts.append(
                "(jsonb_typeof(e.properties -> %s) = 'number' "
                "AND (e.properties ->> %s)::numeric = ANY(%s::numeric[]))"
            )
            params += [name, name, [Decimal(str(number)) for number in numbers]]
        if booleans:
            parts.append(
                "(jsonb_typeof(e.properties -> %s) = 'boolean' AND (e.properties ->> %s)::boolean = ANY(%s))"
            )
            params += [name, name, booleans]
        return f"COALESCE(({' OR '.join(parts)}), FALSE)", params

    def compares(self, name: str, operator: str, number: Any) -> tuple[str, list]:
        number_sql, params = self.number(name)
        return f"COALESCE({number_sql} {operator} %s, FALSE)", [*params, Decimal(str(number))]

    def bucket(self, granularity: str, column: str = "e.timestamp") -> tuple[str, list]:
        return f"date_trunc(%s, {column}, 'UTC')", [granularity]

    def microseconds(self, start: str, end: str) -> str:
        return f"(EXTRACT(EPOCH FROM ({end}) - ({start})) * 1000000)"

    def greatest(self, a: str, b: str) -> str:
        return f"GREATEST({a}, {b})"

    def least(self, a: str, b: str) -> str:
        return f"LEAST({a}, {b})"

    def buckets(self, spans: list[tuple[datetime, datetime]]) -> tuple[str, list]:
        return (
            "SELECT * FROM unnest(%s::timestamptz[], %s::timestamptz[]) AS bk(b_start, b_end)",
            [[start for start, _ in spans], [end for _, end in spans]],
        )

    def moment(self, value: datetime) -> Any:
        return value

    def read_moment(self, value: Any) -> datetime:
        return value


class _SQLite:
    """Properties through json_each: `key = %s` matches the unescaped key exactly, whatever
    characters it holds (dots, quotes, `$`), where a JSON path would have to quote it."""

    def _property(self, name: str, expression: str) -> tuple[str, list]:
        return f"(SELECT {expression} FROM json_each(e.properties) WHERE key = %s)", [name]

    def number(self, name: str) -> tuple[str, list]:
        return self._property(name, "CASE WHEN type IN ('integer', 'real') THEN value END")

    def distinct_value(self, name: str) -> tuple[str, list]:
        # The same equality as PostgreSQL's jsonb: strings, numbers (1 = 1.0), booleans and
        # JSON texts of objects and arrays are distinct kinds.
        return self._property(
            name,
            "CASE WHEN type = 'text' THEN 's' || value "
            "WHEN type IN ('integer', 'real') THEN 'n' || CAST(value AS REAL) "
            "WHEN type IN ('true', 'false') THEN 'b' || type "
            "WHEN type IN ('object', 'array') THEN 'j' || value END",
        )

    def text(self, name: str) -> tuple[str, list]:
        return self._property(
            name,
            "CASE WHEN type IN ('true', 'false') THEN type WHEN type <> 'null' THEN CAST(value AS TEXT) END",
        )

    def matches(self, name: str, strings: list, numbers: list, booleans: list) -> tuple[str, list]:
        parts, params = [], []
        if strings:
            parts.append(f"(type = 'text' AND value IN ({', '.join(['%s'] * len(strings))}))")
            params += strings
        if numbers:
            parts.append(f"(type IN ('integer', 'real') AND value IN ({', '.join(['%s'] * len(numbers))}))")
            params += numbers
        if booleans:
            parts.append(f"type IN ({', '.join(['%s'] * len(booleans))})")
            params += ["true" if flag else "false" for flag in booleans]
        return (
            f"EXISTS (SELECT 1 FROM json_each(e.properties) WHERE key = %s AND ({' OR '.join(parts)}))",
            [name, *params],
        )

    def compares(self, name: str, operator: str, number: Any) -> tuple[str, list]:
        return (
            "EXISTS (SELECT 1 FROM json_each(e.properties) "
            f"WHERE key = %s AND type IN ('integer', 'real') AND value {operator} %s)",
            [name, number],
        )

    def bucket(self, granularity: str, column: str = "e.timestamp") -> tuple[str, list]:
        return f"strftime(%s, {column})", [_SQLITE_BUCKET_FORMATS[granularity]]

    def microseconds(self, start: str, end: str) -> str:
        # Exact integers from Django's text format "YYYY-MM-DD HH:MM:SS[.ffffff]".
        def epoch(expression: str) -> str:
            return (
                f"(CAST(strftime('%%s', {expression}) AS INTEGER) * 1000000 "
                f"+ CAST(substr({expression} || '.000000', 21, 6) AS INTEGER))"
            )

        return f"({epoch(end)} - {epoch(start)})"

    def greatest(self, a: str, b: str) -> str:
        return f"MAX({a}, {b})"

    def least(self, a: str, b: str) -> str:
        return f"MIN({a}, {b})"

    def buckets(self, spans: list[tuple[datetime, datetime]]) -> tuple[str, list]:
        rows = [[self.moment(start), self.moment(end)] for start, end in spans]
        return (
            "SELECT json_extract(value, '$[0]') AS b_start, json_extract(value, '$[1]') AS b_end "
            "FROM json_each(%s)",
            [json.dumps(rows)],
        )

    def moment(self, value: datetime) -> Any:
        return connection.ops.adapt_datetimefield_value(value)

    def read_moment(self, value: Any) -> datetime:
        return parse_datetime(value).replace(tzinfo=UTC)


def _dialect() -> _PostgreSQL | _SQLite:
    return _PostgreSQL() if connection.vendor == "postgresql" else _SQLite()


_OPERATORS = {
    FilterOperator.GT: ">",
    FilterOperator.GTE: ">=",
    FilterOperator.LT: "<",
    FilterOperator.LTE: "<=",
}


def _filters_sql(dialect, filters: list[dict]) -> tuple[list[str], list]:
    clauses, params = [], []
    for item in filters:
        name, operator = item["property"], item["operator"]
        if operator in _OPERATORS:
            sql, more = dialect.compares(name, _OPERATORS[operator], item["value"])
        else:
            values = item["values"] if "values" in item else [item["value"]]
            sql, more = dialect.matches(
                name,
                [value for value in values if isinstance(value, str)],
                [value for value in values if isinstance(value, int | float) and not isinstance(value, bool)],
                [value for value in values if isinstance(value, bool)],
            )
            if operator in (FilterOperator.NOT_IN, FilterOperator.NEQ):
                sql = f"NOT {sql}"
        clauses.append(sql)
        params += more
    return clauses, params


def _where(dialect, meter: Meter, scope: Scope) -> tuple[str, list]:
    """The events that count for a meter within a scope, before any time condition."""
    clauses = ["e.project_id = %s", "e.meter_id = %s", "e.subscription_id IS NOT NULL"]
    params: list = [scope.project_id, meter.pk]
    if scope.customer_id is not None:
        clauses.append("e.customer_id = %s")
        params.append(scope.customer_id)
    if scope.subscription_id is not None:
        clauses.append("e.subscription_id = %s")
        params.append(scope.subscription_id)
    filter_clauses, filter_params = _filters_sql(dialect, meter.filters)
    return " AND ".join(clauses + filter_clauses), params + filter_params


def _value_sql(dialect, meter: Meter) -> tuple[str, list]:
    return dialect.number(meter.property) if meter.property else ("e.value", [])


def _dimensions_sql(dialect, group_by: Sequence[str], by_customer: bool) -> tuple[list[str], list]:
    columns, params = (["e.customer_id"] if by_customer else []), []
    for name in group_by:
        sql, more = dialect.text(name)
        columns.append(sql)
        params += more
    return columns, params


def aggregate(
    *,
    meter: Meter,
    scope: Scope,
    start: datetime,
    end: datetime,
    now: datetime,
    group_by: Sequence[str] = (),
    by_customer: bool = False,
    granularity: str | None = None,
) -> list[Row]:
    """The meter's aggregation over [start, end), per bucket and dimension group, from the raw
    events and unrounded (pricing and the usage API read `period_totals`)."""
    if end <= start:
        return []
    dialect = _dialect()
    if meter.aggregation == Aggregation.WEIGHTED_SUM:
        return _weighted_sum(dialect, meter, scope, start, end, now, group_by, by_customer, granularity)
    bucketed = bool(meter.bucket)
    where, params = _where(dialect, meter, scope)
    value_sql, value_params = _value_sql(dialect, meter)
    dimensions, dimension_params = _dimensions_sql(dialect, group_by, by_customer)
    names = [f"d{i}" for i in range(len(dimensions))]
    if bucketed:
        # Per subscription and per group of the meter's own group_by too: each is billed its own
        # peaks, and the requested dimensions (fewer, or none) sum them.
        extra = [name for name in meter.group_by if name not in group_by]
        extra_sql, extra_params = _dimensions_sql(dialect, extra, by_customer=False)
        dimensions, dimension_params = (
            [*dimensions, "e.subscription_id", *extra_sql],
            [
                *dimension_params,
                *extra_params,
            ],
        )
        bucket_sql, bucket_params = dialect.bucket(meter.bucket)
    else:
        bucket_sql, bucket_params = dialect.bucket(granularity) if granularity else ("NULL", [])
    inner_names = [f"d{i}" for i in range(len(dimensions))]
    select = [f"{bucket_sql} AS b"]
    select += [f"{sql} AS {name}" for sql, name in zip(dimensions, inner_names, strict=True)]
    select_params = [*bucket_params, *dimension_params]
    if meter.aggregation == Aggregation.UNIQUE_COUNT:
        distinct_sql, distinct_params = dialect.distinct_value(meter.property)
        select.append(f"{distinct_sql} AS v")
        select_params += distinct_params
    else:
        select += [f"{value_sql} AS v", "e.timestamp AS ts", "e.id AS id"]
        select_params += value_params
    inner = (
        f"SELECT {', '.join(select)} FROM meters_usageevent e "
        f"WHERE {where} AND e.timestamp >= %s AND e.timestamp < %s"
    )
    params = [*select_params, *params, dialect.moment(start), dialect.moment(end)]
    group = ", ".join(["b", *inner_names])
    if meter.aggregation == Aggregation.LATEST:
        sql = (
            f"SELECT {group}, v AS q FROM (SELECT t.*, ROW_NUMBER() OVER "
            f"(PARTITION BY {group} ORDER BY ts DESC, id DESC) AS rn FROM ({inner}) t WHERE v IS NOT NULL) x "
            "WHERE rn = 1"
        )
    else:
        function = {
            Aggregation.COUNT: "COUNT(*)",
            Aggregation.SUM: "SUM(v)",
            Aggregation.MAX: "MAX(v)",
            Aggregation.MIN: "MIN(v)",
            Aggregation.AVG: "AVG(v)",
            Aggregation.UNIQUE_COUNT: "COUNT(DISTINCT v)",
        }[meter.aggregation]
        sql = f"SELECT {group}, {function} AS q FROM ({inner}) t GROUP BY {group}"
    if bucketed:
        # The meter's buckets summed into the requested granularity's (or into one result).
        if granularity is None:
            outer_sql, outer_params = "NULL", []
        elif granularity in (meter.bucket, HOUR):
            outer_sql, outer_params = "b", []  # a day bucket falls in its first hour
        else:
            outer_sql, outer_params = dialect.bucket(granularity, column="b")
        kept = ", ".join(["ob", *names])
        sql = (
            f"SELECT {kept}, SUM(q) FROM (SELECT {outer_sql} AS ob"
            f"{''.join(f', {name}' for name in names)}, q FROM ({sql}) per_bucket) p GROUP BY {kept}"
        )
        params = [*outer_params, *params]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        fetched = cursor.fetchall()
    rows = []
    for bucket, *rest in fetched:
        moment = None if bucket is None else max(dialect.read_moment(bucket), start)
        rows.append(Row(moment, tuple(rest[:-1]), quantity(rest[-1])))
    return rows


def period_totals(
    *,
    meter: Meter,
    scope: Scope,
    start: datetime,
    end: datetime,
    now: datetime,
    group_by: Sequence[str] = (),
    by_customer: bool = False,
) -> list[Row]:
    """The meter's result over [start, end) per dimension group: what charges are priced on and
    what the usage API reports (a subscription's quantity, its breakdown, summary totals).

    The one place the meter's rounding is applied, so the figure priced is the figure shown. A
    single subscription's undivided total comes from the hourly rollups when they can answer it.
    """
    if (
        uses_rollups(meter)
        and not group_by
        and not by_customer
        and scope.customer_id is not None
        and scope.subscription_id is not None
    ):
        rows = [Row(None, (), rollup_total(meter=meter, scope=scope, start=start, end=end))]
    else:
        rows = aggregate(
            meter=meter,
            scope=scope,
            start=start,
            end=end,
            now=now,
            group_by=group_by,
            by_customer=by_customer,
        )
    if not meter.rounding:
        return rows
    return [
        Row(
            row.bucket,
            row.dimensions,
            round_quantity(row.quantity, rounding=meter.rounding, precision=meter.rounding_precision),
        )
        for row in rows
    ]


def bucket_spans(start: datetime, end: datetime, granularity: str | None) -> list[tuple[datetime, datetime]]:
    """[start, end) cut at UTC hour or day boundaries (or whole, without granularity)."""
    if granularity is None:
        return [(start, end)]
    step = GRANULARITY_STEPS[granularity]
    moment = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    if granularity == DAY:
        moment = moment.replace(hour=0)
    spans = []
    while moment < end:
        spans.append((max(moment, start), min(moment + step, end)))
        moment += step
    return spans


def _weighted_sum(dialect, meter, scope, start, end, now, group_by, by_customer, granularity) -> list[Row]:
    until = min(end, now)
    if until <= start:
        return []
    where, params = _where(dialect, meter, scope)
    value_sql, value_params = _value_sql(dialect, meter)
    dimensions, dimension_params = _dimensions_sql(dialect, group_by, by_customer)
    names = [f"d{i}" for i in range(len(dimensions))]
    partition = f"PARTITION BY {', '.join(names)} " if names else ""
    spans = bucket_spans(start, end, granularity)
    buckets_sql, buckets_params = dialect.buckets(spans)
    dims = "".join(f"{name}, " for name in names)
    window_start, window_until = dialect.moment(start), dialect.moment(until)
    segment_start = dialect.greatest("s.seg_start", "bk.b_start")
    segment_end = dialect.least("s.seg_end", "bk.b_end")
    # Levels as sent, or the running sum of the increments (all of them, from the start of time:
    # `scoped` has no lower bound, so the level held when the window opens includes them).
    level = "v"
    if meter.weighted_input == WeightedInput.INCREMENT:
        level = f"SUM(v) OVER ({partition}ORDER BY ts, id ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)"
    sql = f"""
        WITH scoped AS (
            SELECT {"".join(f"{sql} AS {name}, " for sql, name in zip(dimensions, names, strict=True))}
                   {value_sql} AS v, e.timestamp AS ts, e.id AS id
            FROM meters_usageevent e
            WHERE {where} AND e.timestamp < %s
        ),
        levels AS (
            SELECT {dims}{level} AS v, ts, id FROM scoped WHERE v IS NOT NULL
        ),
        relevant AS (
            SELECT {dims}v, ts, id FROM (
                SELECT levels.*, ROW_NUMBER() OVER ({partition}ORDER BY ts DESC, id DESC) AS carry
                FROM levels WHERE ts < %s
            ) earlier WHERE carry = 1
            UNION ALL
            SELECT {dims}v, ts, id FROM levels WHERE ts >= %s
        ),
        segments AS (
            SELECT {dims}v,
                   CASE WHEN ts < %s THEN %s ELSE ts END AS seg_start,
                   COALESCE(LEAD(ts) OVER ({partition}ORDER BY ts, id), %s) AS seg_end
            FROM relevant
        )
        SELECT bk.b_start, bk.b_end, {", ".join(f"s.{name}" for name in names) + ", " if names else ""}
               SUM(s.v * {dialect.microseconds(segment_start, segment_end)})
        FROM segments s JOIN ({buckets_sql}) bk ON s.seg_start < bk.b_end AND s.seg_end > bk.b_start
        WHERE s.seg_end > s.seg_start
        GROUP BY bk.b_start, bk.b_end{"".join(f", s.{name}" for name in names)}
    """
    params = [
        *dimension_params, *value_params, *params, window_until,
        window_start, window_start,
        window_start, window_start, window_until,
        *buckets_params,
    ]  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        fetched = cursor.fetchall()
    rows = []
    for bucket_start, bucket_end, *rest in fetched:
        bucket_start, bucket_end = dialect.read_moment(bucket_start), dialect.read_moment(bucket_end)
        length = Decimal((bucket_end - bucket_start) // timedelta(microseconds=1))
        level_time = rest[-1] if isinstance(rest[-1], Decimal) else Decimal(rest[-1])
        rows.append(
            Row(
                bucket_start if granularity else None,
                tuple(rest[:-1]),
                quantity(_CONTEXT.divide(level_time, length)),
            )
        )
    return rows


def rollup_total(*, meter: Meter, scope: Scope, start: datetime, end: datetime) -> Decimal:
    """A rollup-eligible meter's total for one subscription over [start, end), from the hourly
    rollups for whole hours and the raw events for the partial hours at the edges, in one query."""
    first_hour = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    if first_hour < start:
        first_hour += timedelta(hours=1)
    last_hour = end.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    dialect = _dialect()
    if first_hour >= last_hour:
        first_hour = last_hour = start  # no whole hour: everything from the raw events
    edge = """
            SELECT COUNT(*), SUM(e.value), MIN(e.value), MAX(e.value)
            FROM meters_usageevent e
            WHERE e.meter_id = %s AND e.customer_id = %s AND e.subscription_id = %s AND e.project_id = %s
              AND e.timestamp >= %s AND e.timestamp < %s
    """
    # The two edges are separate range scans: an OR of the two ranges would make PostgreSQL walk
    # all of the customer's events for the meter.
    sql = f"""
        SELECT SUM(n), SUM(total), MIN(low), MAX(high) FROM (
            SELECT SUM(event_count) AS n, SUM(value_sum) AS total,
                   MIN(value_min) AS low, MAX(value_max) AS high
            FROM meters_usagerollup
            WHERE subscription_id = %s AND meter_id = %s AND hour >= %s AND hour < %s
            UNION ALL {edge}
            UNION ALL {edge}
        ) parts
    """
    scope_params = [meter.pk, scope.customer_id, scope.subscription_id, scope.project_id]
    with connection.cursor() as cursor:
        cursor.execute(
            sql,
            [
                scope.subscription_id, meter.pk, dialect.moment(first_hour), dialect.moment(last_hour),
                *scope_params, dialect.moment(start), dialect.moment(first_hour),
                *scope_params, dialect.moment(last_hour), dialect.moment(end),
            ],
        )  # fmt: skip
        count, total, low, high = cursor.fetchone()
    if not count:
        return Decimal(0)
    if meter.aggregation == Aggregation.AVG:
        return quantity(_CONTEXT.divide(quantity(total), count))
    return quantity(
        {
            Aggregation.COUNT: count,
            Aggregation.SUM: total,
            Aggregation.MIN: low,
            Aggregation.MAX: high,
        }[meter.aggregation]
    )


def uses_rollups(meter: Meter) -> bool:
    """Whether hourly rollups can answer this meter: a plain count, sum, min, max or avg of
    `value`; bucketed, only a count or a sum (which bucketing does not change: the rollups' hours
    cannot give the peak of the partial hours at a window's edges per bucket)."""
    if meter.property or meter.filters or meter.aggregation not in ROLLUP_AGGREGATIONS:
        return False
    return not meter.bucket or meter.aggregation in BUCKET_INVARIANT_AGGREGATIONS


@dataclass(frozen=True)
class PercentageTotals:
    events: int  # events in the window (whose value is a number)
    total_value: Decimal  # the sum of their values
    fees: Decimal  # the sum of the per-event fees of all but the first `free_events` (time order)


def percentage_totals(
    *,
    meter: Meter,
    scope: Scope,
    start: datetime,
    end: datetime,
    rate: Decimal,
    fixed: Decimal | None,
    low: Decimal | None,
    high: Decimal | None,
    free_events: int,
    free_amount: Decimal | None = None,
) -> PercentageTotals:
    """A percentage charge's totals in one query: each event's fee is rate % of its value plus the
    fixed fee, clamped to [low, high]; the first `free_events` events (by timestamp, then id) pay
    none. Multiplying by rate × 0.01 keeps PostgreSQL's numeric arithmetic exact.

    With a `free_amount`, the free allowance is shared as invoicing.rating.rate_percentage_events
    states (the reference this query must agree with): while fewer than `free_events` events have
    passed (if any are free) and the highest running total of the earlier events (`used`, at least 0)
    is below the free amount, an event pays the rate only on its value beyond what is left of the
    free amount; a free event (among the first `free_events`) pays no fixed fee, and nothing at all if
    wholly free."""
    dialect = _dialect()
    where, params = _where(dialect, meter, scope)
    value_sql, value_params = _value_sql(dialect, meter)

    # Decimal parameters reach SQLite as text, which compares above every number: cast them.
    number = "CAST(%s AS NUMERIC)"

    def fee_of(base: str, with_fixed: bool) -> tuple[str, list]:
        fee, fee_params = f"{base} * %s", [rate * Decimal("0.01")]
        if fixed is not None and with_fixed:
            fee, fee_params = f"({fee} + %s)", [*fee_params, fixed]
        if low is not None:
            fee, fee_params = dialect.greatest(fee, number), [*fee_params, low]
        if high is not None:
            fee, fee_params = dialect.least(fee, number), [*fee_params, high]
        return fee, fee_params

    fee, fee_params = fee_of("v", True)
    if not free_amount:
        charged, charged_params = f"CASE WHEN rn > %s THEN {fee} ELSE 0 END", [free_events, *fee_params]
    else:
        # `left`: the free amount left before the event; `is_open`: the allowance still runs.
        is_open = f"(rn <= %s OR %s = 0) AND used < {number}"
        left = f"({number} - used)"
        partial, partial_params = fee_of(f"(v - {left})", True)
        free_partial, free_partial_params = fee_of(f"(v - {left})", False)
        charged = (
            f"CASE WHEN NOT ({is_open}) THEN {fee} "
            f"WHEN v <= {left} THEN (CASE WHEN rn <= %s THEN 0 ELSE {fee_of('0', True)[0]} END) "
            f"WHEN rn <= %s THEN {free_partial} ELSE {partial} END"
        )
        charged_params = [
            free_events,
            free_events,
            free_amount,
            *fee_params,
            free_amount,
            free_events,
            *fee_of("0", True)[1],
            free_events,
            free_amount,
            *free_partial_params,
            free_amount,
            *partial_params,
        ]
    # rn: the event's position; running: the running total through it; used: the highest running
    # total of the events before it, at least 0 (window over a window, hence the nesting).
    earlier = "ORDER BY rn ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING"
    used = dialect.greatest("0", f"COALESCE(MAX(running) OVER ({earlier}), 0)")
    sql = (
        f"SELECT COUNT(*), SUM(v), SUM({charged}) FROM ("
        f"SELECT v, rn, {used} AS used FROM ("
        f"SELECT v, rn, SUM(v) OVER (ORDER BY rn ROWS UNBOUNDED PRECEDING) AS running FROM ("
        f"SELECT v, ROW_NUMBER() OVER (ORDER BY ts, id) AS rn FROM ("
        f"SELECT {value_sql} AS v, e.timestamp AS ts, e.id AS id FROM meters_usageevent e "
        f"WHERE {where} AND e.timestamp >= %s AND e.timestamp < %s) valued WHERE v IS NOT NULL) numbered"
        f") summed) t"
    )
    all_params = [
        *charged_params,
        *value_params,
        *params,
        dialect.moment(start),
        dialect.moment(end),
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, all_params)
        count, total, fees = cursor.fetchone()
    return PercentageTotals(events=count or 0, total_value=quantity(total), fees=quantity(fees))


def property_sum(*, meter: Meter, scope: Scope, start: datetime, end: datetime, name: str) -> Decimal:
    """The sum over [start, end) of the JSON-number property `name` of the events the meter counts
    (matched, passing its filters); a missing or non-number property adds nothing. `name` is bound
    as a parameter, like every property name."""
    if end <= start:
        return Decimal(0)
    dialect = _dialect()
    where, params = _where(dialect, meter, scope)
    value_sql, value_params = dialect.number(name)
    sql = (
        f"SELECT SUM({value_sql}) FROM meters_usageevent e "
        f"WHERE {where} AND e.timestamp >= %s AND e.timestamp < %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*value_params, *params, dialect.moment(start), dialect.moment(end)])
        (total,) = cursor.fetchone()
    return quantity(total)
