"""How usage events match customers, meters and subscriptions (docs/usage.md, "Matching").

- The customer is the project's customer whose `external_id` is the event's `customer`.
- The meter is the project's meter whose `code` is the event's `meter`; when the event names
  none, it is inferred: the one meter the customer's subscriptions price at the event's time
  (else now).
- The subscription is the customer's subscription with a non-paused phase containing the event's
  timestamp (and before the subscription's `ends_at`) whose plan has a usage charge for the
  meter; if several do, the earliest created.

Otherwise the event is unmatched: `unknown_customer` (checked first), `unknown_meter`,
`no_active_subscription`. Ingestion and rematching resolve a whole batch with one query
(`Lookup.load`) and then match each event in memory, so both follow exactly the same rules.
"""

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from django.db import connection
from django.utils.dateparse import parse_datetime

from accounts.models import Project
from catalog.models import Charge, Customer
from catalog.pricing import ChargeKind
from meters.models import Meter, UnmatchedReason
from meters.storage import fetch_prepared
from subscriptions.models import Subscription, SubscriptionPhase


def _placeholders(values: list) -> str:
    # An empty IN () is not valid SQL; NULL matches nothing.
    return ", ".join(["%s"] * len(values)) or "NULL"


def _moment(value: datetime | str | None) -> datetime | None:
    """A timestamp from raw SQL: aware on PostgreSQL; on SQLite, naive UTC (or its text)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = parse_datetime(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


_PHASE, _CUSTOMER, _METER, _SUBSCRIPTION, _CHARGE = (
    model._meta.db_table for model in (SubscriptionPhase, Customer, Meter, Subscription, Charge)
)
# Customers, their phases with charged meters, and meters, in one round trip (a batch of single
# events would otherwise spend more on three ORM queries than on its insert). Every value is a
# parameter; the braces are placeholders lists and this module's table names.
_LOOKUP_SQL = f"""
    WITH phase AS (
        SELECT s.customer_id, p.subscription_id, p.id AS phase_id, p.starts_at, p.paused, ch.meter_id,
               CASE WHEN s.ends_at IS NOT NULL AND (p.ends_at IS NULL OR s.ends_at < p.ends_at)
                    THEN s.ends_at ELSE p.ends_at END AS ends_at
        FROM {_PHASE} p
        JOIN {_SUBSCRIPTION} s ON s.id = p.subscription_id
        JOIN {_CHARGE} ch ON ch.plan_id = p.plan_id
        WHERE s.customer_id IN (
                SELECT id FROM {_CUSTOMER} WHERE project_id = %s AND external_id IN ({{external_ids}})
                UNION ALL SELECT id FROM {_CUSTOMER} WHERE id IN ({{customer_ids}})
            )
          AND ch.kind = %s AND ch.meter_id IS NOT NULL AND p.starts_at <= %s
          AND (p.ends_at IS NULL OR p.ends_at > %s) AND (s.ends_at IS NULL OR s.ends_at > %s)
    )
    SELECT 'p', NULL, customer_id, subscription_id, phase_id, starts_at, ends_at, meter_id, paused,
           CAST(NULL AS boolean), CAST(NULL AS boolean)
    FROM phase
    UNION ALL
    SELECT 'c', external_id, id, NULL, NULL, NULL, NULL, NULL, CAST(NULL AS boolean), CAST(NULL AS boolean),
           CAST(NULL AS boolean)
    FROM {_CUSTOMER} WHERE project_id = %s AND external_id IN ({{external_ids}})
    UNION ALL
    SELECT 'm', code, id, NULL, NULL, NULL, NULL, NULL, CAST(NULL AS boolean),
           whole_numbers_only, allow_negative
    FROM {_METER}
    WHERE project_id = %s
      AND (code IN ({{meter_codes}}) OR id IN ({{meter_ids}}) OR id IN (SELECT meter_id FROM phase))
"""  # noqa: S608 - table names and placeholders only


@dataclass(frozen=True, slots=True)
class MeterRules:
    id: int
    code: str
    whole_numbers_only: bool
    allow_negative: bool

    def refuses(self, value: Decimal, is_whole: bool) -> str | None:
        """The rejection code for a value this meter does not allow, else None."""
        if self.whole_numbers_only and not is_whole:
            return "value_not_integer"
        if value < 0 and not self.allow_negative:
            return "negative_value"
        return None


@dataclass(frozen=True, slots=True)
class Span:
    """A phase: [starts_at, ends_at) of a subscription, with the meters its plan prices."""

    subscription_id: int
    starts_at: datetime
    ends_at: datetime | None
    paused: bool
    meter_ids: frozenset[int]

    def contains(self, moment: datetime) -> bool:
        return self.starts_at <= moment and (self.ends_at is None or moment < self.ends_at)


@dataclass(frozen=True, slots=True)
class Match:
    customer_id: int | None
    meter: MeterRules | None
    subscription_id: int | None
    reason: str  # blank when matched


@dataclass
class Lookup:
    """The customers, meters and subscription phases a batch of events can match."""

    customers: dict[str, int] = field(default_factory=dict)  # external_id → id
    meters: dict[str, MeterRules] = field(default_factory=dict)  # code → rules
    meters_by_id: dict[int, MeterRules] = field(default_factory=dict)
    # customer id → spans, oldest subscription first
    spans: dict[int, list[Span]] = field(default_factory=dict)

    @classmethod
    def load(
        cls,
        *,
        project: Project,
        external_ids: Iterable[str],
        meter_codes: Iterable[str],
        earliest: datetime,
        latest: datetime,
        customer_ids: Iterable[int] = (),
        meter_ids: Iterable[int] = (),
    ) -> "Lookup":
        """One query, whatever the batch size: the customers named (or already known by id), their
        phases overlapping [earliest, latest] with the meters their plans charge for, and the
        meters named, known or charged for."""
        external_ids, meter_codes = sorted(set(external_ids)), sorted(set(meter_codes))
        customer_ids, meter_ids = sorted(set(customer_ids)), sorted(set(meter_ids))
        sql = _LOOKUP_SQL.format(
            external_ids=_placeholders(external_ids),
            customer_ids=_placeholders(customer_ids),
            meter_codes=_placeholders(meter_codes),
            meter_ids=_placeholders(meter_ids),
        )
        adapt = connection.ops.adapt_datetimefield_value
        phase_params = [
            project.pk,
            *external_ids,
            *customer_ids,
            ChargeKind.USAGE,
            adapt(latest),
            adapt(earliest),
            adapt(earliest),
        ]
        params = [
            *phase_params,
            project.pk, *external_ids,
            project.pk, *meter_codes, *meter_ids,
        ]  # fmt: skip
        rows = fetch_prepared(sql, params)
        lookup = cls()
        phases: dict[int, tuple[int, int, datetime, datetime | None, bool, set[int]]] = {}
        for row in rows:
            (
                kind,
                text,
                first,
                subscription_id,
                phase_id,
                starts_at,
                ends_at,
                meter_id,
                paused,
                whole,
                negative,
            ) = row
            if kind == "c":
                lookup.customers[text] = first
            elif kind == "m":
                rules = MeterRules(first, text, bool(whole), bool(negative))
                lookup.meters[text] = rules
                lookup.meters_by_id[first] = rules
            else:
                phase = phases.setdefault(
                    phase_id,
                    (first, subscription_id, _moment(starts_at), _moment(ends_at), bool(paused), set()),
                )
                phase[5].add(meter_id)
        spans = defaultdict(list)
        for customer_id, subscription_id, starts_at, ends_at, paused, priced in phases.values():
            spans[customer_id].append(Span(subscription_id, starts_at, ends_at, paused, frozenset(priced)))
        for customer_spans in spans.values():
            customer_spans.sort(key=lambda span: (span.subscription_id, span.starts_at))
        lookup.spans = dict(spans)
        return lookup

    def infer_meter(self, external_id: str, moment: datetime, now: datetime) -> tuple[MeterRules | None, str]:
        """The meter for an event that names none: (rules, "") or (None, rejection code). Paused
        phases count too: the event is then stored (unmatched) rather than rejected."""
        customer_id = self.customers.get(external_id)
        if customer_id is None:
            return None, "missing_meter"
        spans = self.spans.get(customer_id, ())
        for when in (moment, now):
            priced = {meter_id for span in spans if span.contains(when) for meter_id in span.meter_ids}
            if len(priced) == 1:
                return self.meters_by_id[priced.pop()], ""
            if priced:
                return None, "ambiguous_meter"
        return None, "missing_meter"

    def match(self, customer_id: int | None, meter: MeterRules | None, moment: datetime) -> Match:
        """Given the customer and meter as resolved (None: unknown), the subscription or the reason."""
        if customer_id is None:
            return Match(None, meter, None, UnmatchedReason.UNKNOWN_CUSTOMER)
        if meter is None:
            return Match(customer_id, None, None, UnmatchedReason.UNKNOWN_METER)
        for span in self.spans.get(customer_id, ()):
            if not span.paused and meter.id in span.meter_ids and span.contains(moment):
                return Match(customer_id, meter, span.subscription_id, "")
        return Match(customer_id, meter, None, UnmatchedReason.NO_ACTIVE_SUBSCRIPTION)
