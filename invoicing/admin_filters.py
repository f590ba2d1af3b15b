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

from datetime import date, datetime, time
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.db.models import F, Q
from django.utils import timezone

from billing_site.admin import CalendarMonthFilter
from billing_site.months import add_months, month_param, month_parse, recent_months
from catalog.models import Customer
from invoicing.models import InvoiceStatus


class IssuedMonthFilter(CalendarMonthFilter):
    title = "issued in"
    parameter_name = "issued_month"
    field = "issued_at"


class PeriodMonthFilter(admin.SimpleListFilter):
    """By the month the period starts in, as its customer reads it: a November of a customer in
    Tokyo starts on 31 October, 15:00 UTC. One range per time zone the project's customers have."""

    title = "period"
    parameter_name = "period"
    OLDER = "older"

    def _months(self) -> list[date]:
        return recent_months(timezone.now(), CalendarMonthFilter.MONTHS_OFFERED)

    def lookups(self, request, model_admin):
        months = self._months()
        return [
            *((month_param(month), f"{month:%b %Y}") for month in months),
            (self.OLDER, f"before {months[-1]:%b %Y}"),
        ]

    def queryset(self, request, queryset):
        if not self.value():
            return queryset
        if self.value() == self.OLDER:
            first, end = None, self._months()[-1]
        else:
            first = month_parse(self.value())
            if first is None:
                raise IncorrectLookupParameters(f"period: {self.value()!r} is not a month (YYYY-MM)")
            end = add_months(first, 1)
        zones = Customer.objects.filter(project__in=queryset.values("project")).order_by()
        matches = Q(pk__in=[])
        for zone in zones.values_list("timezone", flat=True).distinct():
            local = ZoneInfo(zone)
            within = Q(customer__timezone=zone, period_start__lt=datetime.combine(end, time(), tzinfo=local))
            if first is not None:
                within &= Q(period_start__gte=datetime.combine(first, time(), tzinfo=local))
            matches |= within
        return queryset.filter(matches)


MAX_ID_DIGITS = 18  # a bigint's; more is no id (and overflows SQLite)


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

    def _lookup(self) -> dict[str, int | str]:
        """An id (digits, as the list's links write it) or a public id; anything else is a bad filter."""
        value = self.value()
        if value.isascii() and value.isdecimal():
            if len(value) > MAX_ID_DIGITS:
                raise IncorrectLookupParameters(f"customer: {value!r} is no customer's id")
            return {"pk": int(value)}
        return {"public_id": value}

    def _customer(self, invoices) -> Customer | None:
        return Customer.objects.filter(pk__in=invoices.values("customer_id"), **self._lookup()).first()

    def queryset(self, request, queryset):
        if not self.value():
            return queryset
        return queryset.filter(**{f"customer__{name}": value for name, value in self._lookup().items()})


def _due():
    return F("total") - F("credits_applied") - F("amount_credited") - F("amount_paid")


OWING_STATUSES = [InvoiceStatus.OPEN, InvoiceStatus.UNCOLLECTIBLE]


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
        # Money is due only on issued invoices that are not paid off: a draft or a void one owes nothing.
        owing = queryset.alias(due=_due()).filter(status__in=OWING_STATUSES)
        if value == "none":
            return queryset.exclude(pk__in=owing.filter(due__gt=0).values("pk"))
        if value == "some":
            return owing.filter(due__gt=0)
        if value in self.THRESHOLDS:
            return owing.filter(due__gte=self.THRESHOLDS[value])
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
