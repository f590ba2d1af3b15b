"""What the admin index shows finance staff first: the month's billing, what is open and overdue,
the review queue, failing webhook endpoints and the month's usage per meter.

Selectors only (the page is billing_site/templatetags/dashboard.py). Every figure is one aggregate
query (GROUP BY currency, month or meter) over the given projects, so the dashboard costs the same
few queries whatever the tables hold. Months are calendar months in UTC.
"""

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal

from django.db.models import (
    Count,
    DecimalField,
    ExpressionWrapper,
    F,
    Max,
    Min,
    Q,
    Sum,
    Value,
)
from django.db.models.functions import Greatest, TruncMonth

from billing_site.aggregates import MoneySum
from billing_site.months import add_months, month_of, month_span
from invoicing.models import AMOUNT_DIGITS, AMOUNT_PLACES, ISSUED_STATUSES, Invoice, InvoiceStatus
from meters.aggregation import quantity, uses_rollups
from meters.models import Aggregation, Meter, UsageRollup
from payments.models import Payment, PaymentStatus
from webhooks.models import DisabledReason, WebhookEndpoint

CHART_MONTHS = 12
_AMOUNT = DecimalField(max_digits=AMOUNT_DIGITS, decimal_places=AMOUNT_PLACES)
# An invoice's amount due (Invoice.amount_due) in SQL.
_AMOUNT_DUE = Greatest(
    ExpressionWrapper(
        F("total") - F("credits_applied") - F("amount_credited") - F("amount_paid"), output_field=_AMOUNT
    ),
    Value(Decimal(0), output_field=_AMOUNT),
    output_field=_AMOUNT,
)

# A failing endpoint: its latest attempt failed (`failing_since` is set by the first failure after
# a success and cleared by the next success), or it was disabled automatically (410 Gone, or five
# days without a success). An endpoint a user disabled is not failing.
FAILING_ENDPOINTS = Q(failing_since__isnull=False) | Q(
    enabled=False, disabled_reason__in=[DisabledReason.GONE, DisabledReason.FAILING]
)


# --- the figures -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    """How many records, and their amount per currency (currencies in alphabetical order)."""

    count: int = 0
    amounts: dict[str, Decimal] = field(default_factory=dict)


@dataclass(frozen=True)
class MeterTotal:
    """A meter's usage this month over every subscription: its aggregation over the month (`count`
    and `sum` summed, `max` the highest, `min` the lowest, `avg` the mean of every event) when the
    hourly rollups can answer it; otherwise (a property, filters, unique count, latest, weighted
    sum) the number of matched events, and `events_only` is set."""

    meter: Meter
    quantity: Decimal
    events_only: bool


@dataclass(frozen=True)
class Dashboard:
    month: date  # the current month (its first day)
    billed: Figure  # issued this month, not void: invoice totals
    collected: Figure  # succeeded payments paid this month, less what was refunded of them
    open: Figure  # open invoices: amount due
    overdue: Figure  # open invoices past their due date: amount due
    review: int  # invoices pending review
    failing_endpoints: int
    billed_by_month: dict[str, list[tuple[date, Decimal]]]  # currency → the last 12 months, oldest first
    usage: list[MeterTotal]  # this month, meters with matched usage, by project then code


def dashboard_read(*, project_ids: Collection[int], now: datetime) -> Dashboard:
    """The dashboard of these projects at `now`, in six queries."""
    month = month_of(now)
    billed_by_month = _billed_by_month(project_ids, month)
    open_, overdue, review = _open_invoices(project_ids, now)
    return Dashboard(
        month=month,
        billed=_billed_in(billed_by_month, month),
        collected=_collected(project_ids, month),
        open=open_,
        overdue=overdue,
        review=review,
        failing_endpoints=WebhookEndpoint.objects.filter(project_id__in=project_ids)
        .filter(FAILING_ENDPOINTS)
        .count(),
        billed_by_month={
            currency: [(key, totals.get(key, (0, Decimal(0)))[1]) for key in _months(month)]
            for currency, totals in sorted(billed_by_month.items())
        },
        usage=_usage(project_ids, month),
    )


def _months(month: date) -> list[date]:
    return [add_months(month, offset) for offset in range(1 - CHART_MONTHS, 1)]


def _billed_by_month(project_ids: Collection[int], month: date) -> dict[str, dict[date, tuple[int, Decimal]]]:
    """Currency → month → (invoices, sum of totals) of the invoices issued in the last 12 months
    (this one included) and not void."""
    start, end = month_span(add_months(month, 1 - CHART_MONTHS))[0], month_span(month)[1]
    rows = (
        Invoice.objects.filter(
            project_id__in=project_ids, status__in=ISSUED_STATUSES, issued_at__gte=start, issued_at__lt=end
        )
        .annotate(month=TruncMonth("issued_at", tzinfo=UTC))
        .values("month", "currency")
        .annotate(n=Count("id"), total=MoneySum("total"))
        .order_by()
    )
    found: dict[str, dict[date, tuple[int, Decimal]]] = {}
    for row in rows:
        found.setdefault(row["currency"], {})[month_of(row["month"])] = (row["n"], row["total"])
    return found


def _billed_in(billed_by_month: dict[str, dict[date, tuple[int, Decimal]]], month: date) -> Figure:
    this_month = {currency: totals[month] for currency, totals in billed_by_month.items() if month in totals}
    return Figure(
        count=sum(n for n, _ in this_month.values()),
        amounts={currency: this_month[currency][1] for currency in sorted(this_month)},
    )


def _open_invoices(project_ids: Collection[int], now: datetime) -> tuple[Figure, Figure, int]:
    """Open invoices and the overdue among them (due before `now`), with their amounts due per
    currency; and the number pending review. One GROUP BY currency over the (project, status)
    index."""
    is_open = Q(status=InvoiceStatus.OPEN)
    is_overdue = is_open & Q(due_at__lt=now)
    rows = (
        Invoice.objects.filter(
            project_id__in=project_ids, status__in=[InvoiceStatus.OPEN, InvoiceStatus.PENDING_REVIEW]
        )
        .values("currency")
        .annotate(
            open_count=Count("id", filter=is_open),
            open_due=MoneySum(_AMOUNT_DUE, filter=is_open),
            overdue_count=Count("id", filter=is_overdue),
            overdue_due=MoneySum(_AMOUNT_DUE, filter=is_overdue),
            review=Count("id", filter=Q(status=InvoiceStatus.PENDING_REVIEW)),
        )
        .order_by("currency")
    )
    rows = list(rows)
    return (
        _figure(rows, "open_count", "open_due"),
        _figure(rows, "overdue_count", "overdue_due"),
        sum(row["review"] for row in rows),
    )


def _figure(rows: list[dict], count: str, amount: str) -> Figure:
    return Figure(
        count=sum(row[count] for row in rows),
        amounts={row["currency"]: row[amount] for row in rows if row[count]},
    )


def _collected(project_ids: Collection[int], month: date) -> Figure:
    """Succeeded payments paid this month (matched to an invoice or not), each less what has been
    refunded of it (succeeded refunds, whenever they were made)."""
    start, end = month_span(month)
    kept = ExpressionWrapper(F("amount") - F("amount_refunded"), output_field=_AMOUNT)
    rows = list(
        Payment.objects.filter(
            project_id__in=project_ids, status=PaymentStatus.SUCCEEDED, paid_at__gte=start, paid_at__lt=end
        )
        .values("currency")
        .annotate(n=Count("id"), kept=MoneySum(kept))
        .order_by("currency")
    )
    return _figure(rows, "n", "kept")


def _usage(project_ids: Collection[int], month: date) -> list[MeterTotal]:
    """Each meter's usage this month from the hourly rollups (one GROUP BY meter over the month's
    rows, read through the rollups' meter index), never from the raw events."""
    start, end = month_span(month)
    rows = {
        row["meter_id"]: row
        for row in UsageRollup.objects.filter(
            meter__in=Meter.objects.filter(project_id__in=project_ids), hour__gte=start, hour__lt=end
        )
        .values("meter_id")
        .annotate(n=Sum("event_count"), total=Sum("value_sum"), low=Min("value_min"), high=Max("value_max"))
        .order_by()
    }
    meters = (
        Meter.objects.filter(pk__in=list(rows)).select_related("project").order_by("project__name", "code")
    )
    return [_meter_total(meter, rows[meter.pk]) for meter in meters]


def _meter_total(meter: Meter, row: dict) -> MeterTotal:
    if not uses_rollups(meter):
        return MeterTotal(meter=meter, quantity=Decimal(row["n"]), events_only=True)
    total = quantity(row["total"])
    value = {
        Aggregation.COUNT: Decimal(row["n"]),
        Aggregation.SUM: total,
        Aggregation.MIN: quantity(row["low"]),
        Aggregation.MAX: quantity(row["high"]),
        Aggregation.AVG: quantity(total / row["n"]) if row["n"] else Decimal(0),
    }[meter.aggregation]
    return MeterTotal(meter=meter, quantity=value, events_only=False)
