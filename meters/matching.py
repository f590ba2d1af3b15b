"""How usage events match customers, meters and subscriptions (docs/usage.md, "Matching").

- The customer is the project's customer whose `external_id` (else whose ID, `cus_…`) is the
  event's customer reference, or whose `processor_customer_id` is its `stripeCustomerId`, or the
  customer of the subscription it names.
- The meter is the project's meter whose `code` is the event's `meter` (for `meter_id`: whose ID,
  `mtr_…`, else whose code); when the event names none, the one meter its product's plans price,
  or else the one meter the customer's subscriptions price at the event's time (else now).
- The subscription is the one the event names (it must price the meter then, or the event is
  refused), or else the customer's subscription with a non-paused phase containing the event's
  timestamp (and before the subscription's `ends_at`) whose plan has a usage charge for the
  meter; if several do, the earliest created.

Otherwise the event is unmatched: `unknown_customer` or `unknown_processor_customer` (checked
first), `unknown_meter`, `no_active_subscription`. Ingestion and rematching resolve a whole batch
with one query (`Lookup.load`) and then match each event in memory, so both follow exactly the
same rules.
"""

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from django.db import connection
from django.utils.dateparse import parse_datetime

from accounts.models import Project
from billing_site.ids import has_public_id_shape
from catalog.models import Charge, Customer, Plan, Product
from catalog.pricing import ChargeKind
from meters.models import Aggregation, Meter, UnmatchedReason
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


_PHASE, _CUSTOMER, _METER, _SUBSCRIPTION, _CHARGE, _PLAN, _PRODUCT = (
    model._meta.db_table
    for model in (SubscriptionPhase, Customer, Meter, Subscription, Charge, Plan, Product)
)
_NAMED_CUSTOMER = f"SELECT id, external_id, public_id, processor_customer_id FROM {_CUSTOMER}"  # noqa: S608
# Everything a batch of events can name, in one round trip (a batch of single events would
# otherwise spend more on several ORM queries than on its insert): the subscriptions named, the
# customers named (or known by id, or owning a named subscription), their phases with the meters
# their plans charge for, the products named with the meters their plans charge for, and the
# meters named, known or charged for. Unions rather than ORs, so that each list uses its index;
# an empty list is `IN (NULL)`, which the planner drops. Every value is a parameter; the braces
# are placeholder lists and this module's table names.
_LOOKUP_SQL = f"""
    WITH named_subscription AS (
        SELECT id, public_id, external_reference, customer_id FROM {_SUBSCRIPTION}
        WHERE project_id = %s AND public_id IN ({{subscription_ids}})
        UNION
        SELECT id, public_id, external_reference, customer_id FROM {_SUBSCRIPTION}
        WHERE project_id = %s AND external_reference IN ({{subscription_references}})
    ),
    named_customer AS (
        {_NAMED_CUSTOMER} WHERE project_id = %s AND external_id IN ({{external_ids}})
        UNION
        {_NAMED_CUSTOMER} WHERE project_id = %s AND public_id IN ({{customer_ids}})
        UNION
        {_NAMED_CUSTOMER} WHERE project_id = %s AND processor_customer_id IN ({{processor_ids}})
        UNION
        {_NAMED_CUSTOMER} WHERE id IN ({{known_customers}})
        UNION
        {_NAMED_CUSTOMER} WHERE id IN (SELECT customer_id FROM named_subscription)
    ),
    phase AS (
        SELECT s.customer_id, p.subscription_id, p.id AS phase_id, p.starts_at, p.paused, ch.meter_id,
               CASE WHEN s.ends_at IS NOT NULL AND (p.ends_at IS NULL OR s.ends_at < p.ends_at)
                    THEN s.ends_at ELSE p.ends_at END AS ends_at
        FROM {_PHASE} p
        JOIN {_SUBSCRIPTION} s ON s.id = p.subscription_id
        JOIN {_CHARGE} ch ON ch.plan_id = p.plan_id
        WHERE s.customer_id IN (SELECT id FROM named_customer)
          AND ch.kind = %s AND ch.meter_id IS NOT NULL AND p.starts_at <= %s
          AND (p.ends_at IS NULL OR p.ends_at > %s) AND (s.ends_at IS NULL OR s.ends_at > %s)
    ),
    product_meter AS (
        -- A product without a usage charge still answers, with a NULL meter: it exists.
        SELECT pr.code, pr.public_id, ch.meter_id
        FROM {_PRODUCT} pr
        LEFT JOIN {_PLAN} pl ON pl.product_id = pr.id
        LEFT JOIN {_CHARGE} ch ON ch.plan_id = pl.id AND ch.kind = %s AND ch.meter_id IS NOT NULL
        WHERE pr.project_id = %s AND (pr.code IN ({{product_codes}}) OR pr.public_id IN ({{product_ids}}))
    )
    SELECT 'p', NULL, NULL, customer_id, subscription_id, phase_id, starts_at, ends_at, meter_id, paused,
           CAST(NULL AS boolean), CAST(NULL AS boolean), NULL
    FROM phase
    UNION ALL
    SELECT 'c', external_id, public_id, id, NULL, NULL, NULL, NULL, NULL, CAST(NULL AS boolean),
           CAST(NULL AS boolean), CAST(NULL AS boolean), NULL
    FROM named_customer
    UNION ALL
    SELECT 'x', processor_customer_id, NULL, id, NULL, NULL, NULL, NULL, NULL, CAST(NULL AS boolean),
           CAST(NULL AS boolean), CAST(NULL AS boolean), NULL
    FROM named_customer WHERE processor_customer_id IN ({{processor_ids}})
    UNION ALL
    SELECT 's', public_id, external_reference, customer_id, id, NULL, NULL, NULL, NULL, CAST(NULL AS boolean),
           CAST(NULL AS boolean), CAST(NULL AS boolean), NULL
    FROM named_subscription
    UNION ALL
    SELECT 'r', code, public_id, NULL, NULL, NULL, NULL, NULL, meter_id, CAST(NULL AS boolean),
           CAST(NULL AS boolean), CAST(NULL AS boolean), NULL
    FROM product_meter
    UNION ALL
    SELECT 'm', code, public_id, id, NULL, NULL, NULL, NULL, NULL, CAST(NULL AS boolean),
           whole_numbers_only, allow_negative, aggregation
    FROM {_METER}
    WHERE project_id = %s
      AND (code IN ({{meter_codes}}) OR public_id IN ({{meter_ids}}) OR id IN ({{known_meters}})
           OR id IN (SELECT meter_id FROM phase) OR id IN (SELECT meter_id FROM product_meter))
"""  # noqa: S608 - table names and placeholders only
# Aggregations that count events rather than add their values: an event may leave its value out.
COUNTING = frozenset({Aggregation.COUNT, Aggregation.UNIQUE_COUNT})


@dataclass(frozen=True, slots=True)
class MeterRules:
    id: int
    code: str
    whole_numbers_only: bool
    allow_negative: bool
    counts_events: bool  # its aggregation ignores values (COUNTING)

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

    def prices(self, meter: MeterRules, moment: datetime) -> bool:
        return not self.paused and meter.id in self.meter_ids and self.contains(moment)


@dataclass(frozen=True, slots=True)
class NamedSubscription:
    id: int
    customer_id: int


@dataclass(frozen=True, slots=True)
class Match:
    customer_id: int | None
    meter: MeterRules | None
    subscription_id: int | None
    reason: str  # blank when matched


def _ids(references: set[str], prefix: str) -> list[str]:
    return sorted(reference for reference in references if has_public_id_shape(reference, prefix))


@dataclass
class Lookup:
    """The customers, subscriptions, products, meters and subscription phases a batch of events
    can match."""

    customers: dict[str, int] = field(default_factory=dict)  # external_id → id
    customers_by_public_id: dict[str, int] = field(default_factory=dict)
    external_ids: dict[int, str] = field(default_factory=dict)  # id → external_id
    processor_customers: dict[str, set[int]] = field(default_factory=dict)  # processor's id → ids
    subscriptions: dict[str, NamedSubscription] = field(default_factory=dict)  # public id →
    subscriptions_by_reference: dict[str, list[NamedSubscription]] = field(default_factory=dict)
    meters: dict[str, MeterRules] = field(default_factory=dict)  # code → rules
    meters_by_public_id: dict[str, MeterRules] = field(default_factory=dict)
    meters_by_id: dict[int, MeterRules] = field(default_factory=dict)
    products: dict[str, set[int]] = field(default_factory=dict)  # code → ids of the meters priced
    products_by_public_id: dict[str, set[int]] = field(default_factory=dict)
    # customer id → spans, oldest subscription first
    spans: dict[int, list[Span]] = field(default_factory=dict)

    @classmethod
    def load(
        cls,
        *,
        project: Project,
        customers: Iterable[str],
        meters: Iterable[str],
        earliest: datetime,
        latest: datetime,
        processor_customers: Iterable[str] = (),
        subscriptions: Iterable[str] = (),
        products: Iterable[str] = (),
        customer_ids: Iterable[int] = (),
        meter_ids: Iterable[int] = (),
    ) -> "Lookup":
        """One query, whatever the batch size: what the references name (customers by external
        ID or ID, by processor ID; subscriptions by ID or external reference; products and meters
        by code or ID), the customers already known by id, their phases overlapping
        [earliest, latest] with the meters their plans charge for, and those meters."""
        customers, meters = set(customers), set(meters)
        subscriptions, products = set(subscriptions), set(products)
        lists = {
            "subscription_ids": _ids(subscriptions, "sub"),
            "subscription_references": sorted(subscriptions),
            "external_ids": sorted(customers),
            "customer_ids": _ids(customers, "cus"),
            "processor_ids": sorted(set(processor_customers)),
            "known_customers": sorted(set(customer_ids)),
            "product_codes": sorted(products),
            "product_ids": _ids(products, "prod"),
            "meter_codes": sorted(meters),
            "meter_ids": _ids(meters, "mtr"),
            "known_meters": sorted(set(meter_ids)),
        }
        sql = _LOOKUP_SQL.format(**{name: _placeholders(values) for name, values in lists.items()})
        adapt = connection.ops.adapt_datetimefield_value
        pk = project.pk
        # In the order of the placeholders in the text.
        params = [
            pk, *lists["subscription_ids"], pk, *lists["subscription_references"],
            pk, *lists["external_ids"], pk, *lists["customer_ids"], pk, *lists["processor_ids"],
            *lists["known_customers"],
            ChargeKind.USAGE, adapt(latest), adapt(earliest), adapt(earliest),
            ChargeKind.USAGE, pk, *lists["product_codes"], *lists["product_ids"],
            *lists["processor_ids"],
            pk, *lists["meter_codes"], *lists["meter_ids"], *lists["known_meters"],
        ]  # fmt: skip
        lookup = cls()
        phases: dict[int, tuple[int, int, datetime, datetime | None, bool, set[int]]] = {}
        for row in fetch_prepared(sql, params):
            kind, text, alternative, first, subscription_id, phase_id = row[:6]
            starts_at, ends_at, meter_id, paused, whole, negative, aggregation = row[6:]
            if kind == "p":
                phase = phases.setdefault(
                    phase_id,
                    (first, subscription_id, _moment(starts_at), _moment(ends_at), bool(paused), set()),
                )
                phase[5].add(meter_id)
            elif kind == "c":
                lookup.customers[text] = lookup.customers_by_public_id[alternative] = first
                lookup.external_ids[first] = text
            elif kind == "x":
                lookup.processor_customers.setdefault(text, set()).add(first)
            elif kind == "s":
                named = NamedSubscription(subscription_id, first)
                lookup.subscriptions[text] = named
                lookup.subscriptions_by_reference.setdefault(alternative, []).append(named)
            elif kind == "r":
                priced = lookup.products.setdefault(text, set())
                lookup.products_by_public_id[alternative] = priced
                if meter_id is not None:
                    priced.add(meter_id)
            else:
                rules = MeterRules(first, text, bool(whole), bool(negative), aggregation in COUNTING)
                lookup.meters[text] = lookup.meters_by_public_id[alternative] = rules
                lookup.meters_by_id[first] = rules
        spans = defaultdict(list)
        for customer_id, subscription_id, starts_at, ends_at, paused, priced in phases.values():
            spans[customer_id].append(Span(subscription_id, starts_at, ends_at, paused, frozenset(priced)))
        for customer_spans in spans.values():
            customer_spans.sort(key=lambda span: (span.subscription_id, span.starts_at))
        lookup.spans = dict(spans)
        return lookup

    def customer(self, reference: str) -> int | None:
        """The customer whose external_id, else whose ID, is `reference`."""
        found = self.customers.get(reference)
        return found if found is not None else self.customers_by_public_id.get(reference)

    def processor_customer(self, reference: str) -> set[int]:
        """The customers whose processor_customer_id is `reference` (it is not unique)."""
        return self.processor_customers.get(reference, set())

    def subscription(self, reference: str) -> list[NamedSubscription]:
        """The subscription whose ID is `reference`, else those whose external_reference is (it
        is not unique)."""
        found = self.subscriptions.get(reference)
        return [found] if found is not None else self.subscriptions_by_reference.get(reference, [])

    def meter(self, reference: str, *, by_id: bool) -> MeterRules | None:
        """The meter whose code is `reference`; with `by_id`, first the meter whose ID it is."""
        found = self.meters_by_public_id.get(reference) if by_id else None
        return found if found is not None else self.meters.get(reference)

    def product_meters(self, reference: str) -> set[int] | None:
        """The meters the usage charges of the product's plans price (None: no such product), the
        product named by its ID or, failing that, its code."""
        found = self.products_by_public_id.get(reference)
        return found if found is not None else self.products.get(reference)

    def infer_meter(
        self, customer_id: int | None, moment: datetime, now: datetime, *, subscription_id: int | None = None
    ) -> tuple[MeterRules | None, str]:
        """The meter for an event that names none: (rules, "") or (None, rejection code), from the
        customer's subscriptions, or only the one named. Paused phases count too: the event is
        then stored (unmatched) rather than rejected."""
        if customer_id is None:
            return None, "missing_meter"
        spans = [
            span
            for span in self.spans.get(customer_id, ())
            if subscription_id is None or span.subscription_id == subscription_id
        ]
        for when in (moment, now):
            priced = {meter_id for span in spans if span.contains(when) for meter_id in span.meter_ids}
            if len(priced) == 1:
                return self.meters_by_id[priced.pop()], ""
            if priced:
                return None, "ambiguous_meter"
        return None, "missing_meter"

    def match(
        self,
        customer_id: int | None,
        meter: MeterRules | None,
        moment: datetime,
        *,
        unknown_customer: str = UnmatchedReason.UNKNOWN_CUSTOMER,
    ) -> Match:
        """Given the customer and meter as resolved (None: unknown; `unknown_customer` says which
        reference did not name one), the subscription or the reason."""
        if customer_id is None:
            return Match(None, meter, None, unknown_customer)
        if meter is None:
            return Match(customer_id, None, None, UnmatchedReason.UNKNOWN_METER)
        for span in self.spans.get(customer_id, ()):
            if span.prices(meter, moment):
                return Match(customer_id, meter, span.subscription_id, "")
        return Match(customer_id, meter, None, UnmatchedReason.NO_ACTIVE_SUBSCRIPTION)

    def subscription_prices(
        self, subscription: NamedSubscription, meter: MeterRules, moment: datetime
    ) -> bool:
        """Whether this subscription prices the meter at that moment (a non-paused phase)."""
        return any(
            span.subscription_id == subscription.id and span.prices(meter, moment)
            for span in self.spans.get(subscription.customer_id, ())
        )
