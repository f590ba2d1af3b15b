from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from django.db.models import Count, Exists, Max, Min, OuterRef, Q, QuerySet
from django.utils import timezone

from accounts.models import Project
from catalog.models import Charge, Customer
from catalog.pricing import ChargeKind
from meters.aggregation import (
    PercentageTotals,
    Row,
    Scope,
    aggregate,
    percentage_totals,
    period_totals,
    property_sum,
)
from meters.models import Meter, UsageEvent, UsageRollup
from subscriptions.models import Status, Subscription
from subscriptions.periods import Period
from subscriptions.services import period_grid

# Subscriptions that have a current period to show usage for.
CURRENT_STATUSES = (Status.ACTIVE, Status.TRIALING, Status.PAUSED)


def subscription_scope(subscription: Subscription) -> Scope:
    """The events a subscription's usage is counted from."""
    return Scope(
        project_id=subscription.project_id,
        customer_id=subscription.customer_id,
        subscription_id=subscription.pk,
    )


def meter_list(*, project: Project) -> QuerySet[Meter]:
    return Meter.objects.filter(project=project)


def meter_quantity(
    *, meter: Meter, subscription: Subscription, start: datetime, end: datetime, now: datetime | None = None
) -> Decimal:
    """What a subscription used of a meter over [start, end): the number its charge is priced on,
    rounded as the meter says.

    Plain count/sum/min/max/avg meters read the hourly rollups (plus the raw events of partial
    hours at the edges), so a period with millions of events costs a few hundred rows; every other
    meter aggregates the raw events (see `period_totals`).
    """
    scope = subscription_scope(subscription)
    rows = period_totals(meter=meter, scope=scope, start=start, end=end, now=now or timezone.now())
    return rows[0].quantity if rows else Decimal(0)


def meter_breakdown(
    *, meter: Meter, subscription: Subscription, start: datetime, end: datetime, now: datetime | None = None
) -> list[tuple[dict[str, str | None], Decimal]]:
    """The same quantity broken down by the meter's `group_by` properties."""
    if not meter.group_by:
        return []
    scope = subscription_scope(subscription)
    rows = period_totals(
        meter=meter, scope=scope, start=start, end=end, now=now or timezone.now(), group_by=meter.group_by
    )
    breakdown = [(dict(zip(meter.group_by, row.dimensions, strict=True)), row.quantity) for row in rows]
    return sorted(breakdown, key=lambda item: [(value is None, value or "") for value in item[0].values()])


def current_period(subscription: Subscription, now: datetime) -> Period:
    """The billing period containing `now`. The stored current period, unless it has ended and the
    period close has not moved the subscription on yet (the grace period): then the next one."""
    if subscription.current_period_start <= now < subscription.current_period_end:
        return Period(start=subscription.current_period_start, end=subscription.current_period_end)
    return period_grid(subscription).period_at(max(now, subscription.period_anchor))


def priced_meters(subscription: Subscription, period: Period) -> QuerySet[Meter]:
    """The meters the plans of a subscription's phases overlapping the period charge for."""
    plans = subscription.phases.filter(starts_at__lt=period.end).filter(
        Q(ends_at__isnull=True) | Q(ends_at__gt=period.start)
    )
    charged = Charge.objects.filter(kind=ChargeKind.USAGE, plan__in=plans.values("plan_id")).values(
        "meter_id"
    )
    return Meter.objects.filter(pk__in=charged).order_by("code")


@dataclass
class MeterUsage:
    meter: Meter
    quantity: Decimal
    breakdown: list[tuple[dict[str, str | None], Decimal]]


@dataclass
class SubscriptionUsage:
    subscription: Subscription
    period: Period
    meters: list[MeterUsage]


def customer_current_usage(*, customer: Customer, now: datetime | None = None) -> list[SubscriptionUsage]:
    """Per current subscription (active, trialing or paused): its current period and, per meter
    its plans price, the quantity so far and its breakdown by the meter's dimensions."""
    now = now or timezone.now()
    started = Subscription.objects.filter(project=customer.project_id, customer=customer, starts_at__lte=now)
    usage = []
    for subscription in started.exclude(ends_at__lte=now).select_related("plan").order_by("id"):
        subscription.current_status = subscription.status_at(now)
        if subscription.current_status not in CURRENT_STATUSES:
            continue
        period = current_period(subscription, now)
        meters = [
            MeterUsage(
                meter=meter,
                quantity=meter_quantity(
                    meter=meter, subscription=subscription, start=period.start, end=period.end, now=now
                ),
                breakdown=meter_breakdown(
                    meter=meter, subscription=subscription, start=period.start, end=period.end, now=now
                ),
            )
            for meter in priced_meters(subscription, period)
        ]
        usage.append(SubscriptionUsage(subscription=subscription, period=period, meters=meters))
    return usage


@dataclass
class SummaryGroup:
    meter: Meter
    dimensions: tuple  # the customer id first when grouped by customer, then property values
    quantity: Decimal
    buckets: list[tuple[datetime, Decimal]] = field(default_factory=list)


def usage_summary(
    *,
    project: Project,
    start: datetime,
    end: datetime,
    meters: Sequence[Meter],
    customer: Customer | None = None,
    group_by: Sequence[str] = (),
    by_customer: bool = False,
    granularity: str | None = None,
    now: datetime | None = None,
) -> list[SummaryGroup]:
    """Billed usage (matched events) over [start, end), per meter and dimension group: the total,
    and per UTC hour or day bucket when a granularity is given. Empty groups are left out."""
    now = now or timezone.now()
    scope = Scope(project_id=project.pk, customer_id=customer.pk if customer else None)
    groups = []
    for meter in meters:
        options = {"meter": meter, "scope": scope, "start": start, "end": end, "now": now}
        options.update(group_by=group_by, by_customer=by_customer)
        found: dict[tuple, SummaryGroup] = {}
        for row in period_totals(**options):  # rounded as the meter says; the buckets are not
            found[row.dimensions] = SummaryGroup(
                meter=meter, dimensions=row.dimensions, quantity=row.quantity
            )
        if granularity:
            for row in sorted(aggregate(**options, granularity=granularity), key=_by_bucket):
                found[row.dimensions].buckets.append((row.bucket, row.quantity))
        groups += sorted(found.values(), key=lambda group: [(v is None, str(v)) for v in group.dimensions])
    return groups


def _by_bucket(row: Row) -> datetime:
    return row.bucket


def unmatched_reason_counts(events: QuerySet[UsageEvent]) -> dict[str, int]:
    """How many of these events are unmatched, per reason (one GROUP BY)."""
    rows = events.exclude(unmatched_reason="").values("unmatched_reason").annotate(n=Count("id"))
    return {row["unmatched_reason"]: row["n"] for row in rows.order_by()}


def unmatched_counts_by_project(*, project_ids: list[int]) -> dict[int, int]:
    """How many unmatched events each of these projects holds (one GROUP BY over the unmatched
    events' partial index)."""
    rows = (
        UsageEvent.objects.filter(project_id__in=project_ids)
        .exclude(unmatched_reason="")
        .values("project_id")
        .annotate(n=Count("id"))
        .order_by()
    )
    return {row["project_id"]: row["n"] for row in rows}


def customer_public_ids(*, project: Project, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    return dict(Customer.objects.filter(project=project, pk__in=ids).values_list("pk", "public_id"))


def projects_with_unmatched_usage() -> QuerySet[Project]:
    unmatched = UsageEvent.objects.filter(project=OuterRef("pk")).exclude(unmatched_reason="")
    return Project.objects.filter(Exists(unmatched)).order_by("pk")


def percentage_usage(
    *, meter: Meter, subscription: Subscription, start: datetime, end: datetime, pricing
) -> PercentageTotals:
    """What a percentage charge needs from a subscription's events over [start, end)."""
    return percentage_totals(
        meter=meter,
        scope=subscription_scope(subscription),
        start=start,
        end=end,
        rate=pricing.percentage_rate,
        fixed=pricing.fixed_fee_per_event,
        low=pricing.min_fee_per_event,
        high=pricing.max_fee_per_event,
        free_events=int(pricing.free_units),
        free_amount=pricing.free_amount,
    )


def late_event_span(*, subscription: Subscription, before: datetime) -> tuple[datetime, datetime] | None:
    """The span of hours before `before` that received events for the subscription after `before`
    itself: usage that arrived once its period may already have been invoiced. Read from the
    hourly rollups, which record when each hour was last added to (a few rows per hour of history,
    where the events table would mean a scan of the subscription's whole history)."""
    span = UsageRollup.objects.filter(
        subscription=subscription, hour__lt=before, last_matched_at__gte=before
    ).aggregate(first=Min("hour"), last=Max("hour"))
    return None if span["first"] is None else (span["first"], span["last"] + timedelta(hours=1))


def dynamic_amount(
    *, meter: Meter, subscription: Subscription, start: datetime, end: datetime, property: str
) -> Decimal:
    """What a dynamic charge bills a subscription over [start, end): the sum of `property` (a JSON
    number) over the events its meter counts (matched, passing the meter's filters); events without
    the property, or with a non-number, add nothing."""
    return property_sum(
        meter=meter,
        scope=subscription_scope(subscription),
        start=start,
        end=end,
        name=property,
    )
