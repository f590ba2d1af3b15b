from django.db.models import (
    Case,
    DurationField,
    Exists,
    ExpressionWrapper,
    F,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Subquery,
    When,
)
from django.db.models.functions import Coalesce

from accounts.models import Project
from catalog.models import Customer
from catalog.selectors import CUSTOMER_PAGE_ROWS
from invoicing.models import CreditNote, CreditNoteLine, Invoice, InvoiceEmail, InvoiceLine, InvoiceStatus


def invoice_lines_prefetch() -> Prefetch:
    """An invoice's lines with what the API shows of them (plan, charge, meter, original invoice)."""
    lines = InvoiceLine.objects.select_related("plan", "charge", "meter", "original_invoice")
    return Prefetch("lines", queryset=lines)


def invoice_list(*, project: Project) -> QuerySet[Invoice]:
    return (
        Invoice.objects.filter(project=project)
        .select_related("customer", "subscription", "project")
        .prefetch_related(invoice_lines_prefetch(), invoice_emails_prefetch(), "payments")
    )


def invoice_emails_prefetch() -> Prefetch:
    """An invoice's emails, latest first (the API shows the latest as `last_delivery`)."""
    return Prefetch("emails", queryset=InvoiceEmail.objects.select_related("invoice").order_by("-id"))


def credit_note_list(*, project: Project) -> QuerySet[CreditNote]:
    lines = CreditNoteLine.objects.select_related("invoice_line", "credit_note__invoice")
    return (
        CreditNote.objects.filter(project=project)
        .select_related("invoice")
        .prefetch_related(Prefetch("lines", queryset=lines))
    )


# --- the back office's invoice list -----------------------------------------------------------------


def _length(start: str, end: str, times: int):
    return ExpressionWrapper((F(end) - F(start)) * times, output_field=DurationField())


def _like_previous() -> QuerySet[Invoice]:
    """The earlier non-void invoices of the same subscription, for the same billing reason, over a
    period as long as the outer invoice's within a tenth (months of 28 to 31 days compare; a
    prorated period does not compare with a whole one), latest first."""
    outer = ExpressionWrapper(
        (OuterRef("period_end") - OuterRef("period_start")), output_field=DurationField()
    )
    return (
        Invoice.objects.filter(
            subscription=OuterRef("subscription"),
            billing_reason=OuterRef("billing_reason"),
            period_start__lte=OuterRef("period_start"),
            pk__lt=OuterRef("pk"),
        )
        .exclude(status=InvoiceStatus.VOID)
        .alias(
            tenfold=_length("period_start", "period_end", 10),
            ninefold=_length("period_start", "period_end", 9),
        )
        .filter(tenfold__gte=outer * 9, ninefold__lte=outer * 10)
        .order_by("-period_start", "-pk")
    )


def invoices_for_back_office(queryset: QuerySet[Invoice]) -> QuerySet[Invoice]:
    """The invoice list as finance reads it, one query for the page:

    - `previous_total`: the total of the previous like invoice (`_like_previous`), None if there is
      none; `has_previous`: whether the subscription has any earlier non-void invoice at all;
    - `billed_start`/`billed_end`: the period the invoice bills. An opening invoice closes no usage
      period ([start, start)) while its fees in advance cover the first one: its lines' span
      (its own, if it has no lines).
    """
    earlier = Invoice.objects.filter(subscription=OuterRef("subscription"), pk__lt=OuterRef("pk")).exclude(
        status=InvoiceStatus.VOID
    )
    lines = InvoiceLine.objects.filter(invoice=OuterRef("pk"))
    zero_length = Q(period_end=F("period_start"))
    first_line = Subquery(lines.order_by("period_start").values("period_start")[:1])
    last_line = Subquery(lines.order_by("-period_end").values("period_end")[:1])
    return queryset.annotate(
        previous_total=Subquery(_like_previous().values("total")[:1]),
        has_previous=Exists(earlier),
        billed_start=Case(
            When(zero_length, then=Coalesce(first_line, "period_start")),
            default=F("period_start"),
        ),
        billed_end=Case(
            When(zero_length, then=Coalesce(last_line, "period_end")),
            default=F("period_end"),
        ),
    )


def invoice_lines_of(invoices: QuerySet[Invoice]) -> QuerySet[InvoiceLine]:
    """The lines of these invoices, invoice by invoice, for an export."""
    return (
        InvoiceLine.objects.filter(invoice__in=invoices.values("pk"))
        .select_related("invoice")
        .order_by("invoice_id", "position", "id")
    )


# The back office lists issued invoices by number, newest first, then the unnumbered ones (drafts,
# those in review, those rejected there) by period, newest first.
BACK_OFFICE_ORDER = (F("number").desc(nulls_last=True), F("period_start").desc(), F("id").desc())


def customer_invoice_list(*, customer: Customer, limit: int = CUSTOMER_PAGE_ROWS) -> list[Invoice]:
    """The customer's invoices, latest first, with the period each bills (invoices_for_back_office)."""
    found = invoices_for_back_office(Invoice.objects.filter(customer=customer).select_related("project"))
    return list(found.order_by("-id")[:limit])


def customer_credit_note_list(*, customer: Customer, limit: int = CUSTOMER_PAGE_ROWS) -> list[CreditNote]:
    found = CreditNote.objects.filter(invoice__customer=customer).select_related("invoice", "project")
    return list(found.order_by("-id")[:limit])
