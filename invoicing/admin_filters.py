"""The invoice list's filters, each a query parameter that also works as a link from elsewhere
(the dashboard links to `?overdue=yes` and `?issued_month=2026-11`).

- `period=YYYY-MM` (or `older`): the month the invoice's period starts in, in its customer's time
  zone; the last 12 months are offered.
- `issued_month=YYYY-MM`: issued in that calendar month (UTC).
- `customer=<public id or id>`: typed, not picked from a list of every customer.
- `due=none|some|1000|10000`: amount due, in the invoice's currency.
- `overdue=yes|no`: open and past its due date, or not.

A value no filter understands (`issued_month=2026-13`) is IncorrectLookupParameters: the list
shows Django's "bad filters" page rather than an error.
"""

from datetime import UTC, date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.db.models import F, Q
from django.utils import timezone

from catalog.models import Customer
from invoicing.models import InvoiceStatus

MONTHS_OFFERED = 12


def _month(value: str) -> tuple[int, int]:
    try:
        moment = datetime.strptime(value, "%Y-%m").replace(tzinfo=UTC)
    except ValueError:
        raise IncorrectLookupParameters(f"{value!r} is not a month (YYYY-MM).") from None
    return moment.year, moment.month


def _next(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)


def _recent_months(count: int) -> list[tuple[int, int]]:
    today = timezone.now().astimezone(UTC)
    year, month = today.year, today.month
    months = []
    for _ in range(count):
        months.append((year, month))
        year, month = (year - 1, 12) if month == 1 else (year, month - 1)
    return months


def _label(year: int, month: int) -> str:
    return date(year, month, 1).strftime("%b %Y")


class IssuedMonthFilter(admin.SimpleListFilter):
    title = "issued in"
    parameter_name = "issued_month"

    def lookups(self, request, model_admin):
        return [(f"{y:04d}-{m:02d}", _label(y, m)) for y, m in _recent_months(MONTHS_OFFERED)]

    def queryset(self, request, queryset):
        if not self.value():
            return queryset
        year, month = _month(self.value())
        start = datetime(year, month, 1, tzinfo=UTC)
        end = datetime(*_next(year, month), 1, tzinfo=UTC)
        return queryset.filter(issued_at__gte=start, issued_at__lt=end)


class PeriodMonthFilter(admin.SimpleListFilter):
    """By the month the period starts in, as its customer reads it: a November of a customer in
    Tokyo starts on 31 October, 15:00 UTC. One range per time zone the customers have."""

    title = "period"
    parameter_name = "period"
    OLDER = "older"

    def lookups(self, request, model_admin):
        months = _recent_months(MONTHS_OFFERED)
        return [
            *((f"{y:04d}-{m:02d}", _label(y, m)) for y, m in months),
            (self.OLDER, f"before {_label(*months[-1])}"),
        ]

    def queryset(self, request, queryset):
        if not self.value():
            return queryset
        if self.value() == self.OLDER:
            first, end = None, _recent_months(MONTHS_OFFERED)[-1]
        else:
            first = _month(self.value())
            end = _next(*first)
        zones = Customer.objects.order_by().values_list("timezone", flat=True).distinct()
        matches = Q(pk__in=[])
        for zone in zones:
            local = ZoneInfo(zone)
            within = Q(customer__timezone=zone, period_start__lt=datetime(*end, 1, tzinfo=local))
            if first is not None:
                within &= Q(period_start__gte=datetime(*first, 1, tzinfo=local))
            matches |= within
        return queryset.filter(matches)


class CustomerFilter(admin.SimpleListFilter):
    """A customer typed by ID (cus_…) or number: a project may have 100,000 customers, so none
    are listed."""

    title = "customer"
    parameter_name = "customer"
    template = "admin/invoicing/invoice/input_filter.html"

    def lookups(self, request, model_admin):
        return []

    def has_output(self) -> bool:
        return True

    def choices(self, changelist):
        # The search, the ordering and the other filters stay as they are.
        others = {k: v for k, v in changelist.params.items() if k != self.parameter_name}
        customer = self._customer(changelist.root_queryset) if self.value() else None
        yield {
            "value": self.value() or "",
            "name": self.parameter_name,
            "others": list(others.items()),
            "found": customer,
            "clear": changelist.get_query_string(remove=[self.parameter_name]),
        }

    def _customer(self, invoices) -> Customer | None:
        lookup = {"pk": self.value()} if self.value().isdigit() else {"public_id": self.value()}
        return Customer.objects.filter(pk__in=invoices.values("customer_id"), **lookup).first()

    def queryset(self, request, queryset):
        if not self.value():
            return queryset
        if self.value().isdigit():
            return queryset.filter(customer_id=int(self.value()))
        return queryset.filter(customer__public_id=self.value())


def _due():
    return F("total") - F("credits_applied") - F("amount_credited") - F("amount_paid")


class AmountDueFilter(admin.SimpleListFilter):
    title = "amount due"
    parameter_name = "due"
    THRESHOLDS = {"1000": Decimal(1000), "10000": Decimal(10000)}

    def lookups(self, request, model_admin):
        return [("none", "nothing due"), ("some", "> 0"), ("1000", "≥ 1,000"), ("10000", "≥ 10,000")]

    def queryset(self, request, queryset):
        value = self.value()
        if not value:
            return queryset
        queryset = queryset.alias(due=_due())
        if value == "none":
            return queryset.filter(due__lte=0)
        if value == "some":
            return queryset.filter(due__gt=0)
        if value in self.THRESHOLDS:
            return queryset.filter(due__gte=self.THRESHOLDS[value])
        raise IncorrectLookupParameters(f"{value!r} is not an amount-due filter.")


class OverdueFilter(admin.SimpleListFilter):
    title = "overdue"
    parameter_name = "overdue"

    def lookups(self, request, model_admin):
        return [("yes", "Yes"), ("no", "No")]

    def queryset(self, request, queryset):
        overdue = Q(status=InvoiceStatus.OPEN, due_at__lt=timezone.now())
        if self.value() == "yes":
            return queryset.filter(overdue)
        if self.value() == "no":
            return queryset.exclude(overdue)
        return queryset
