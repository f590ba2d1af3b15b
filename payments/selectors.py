"""Reads of payment methods, payments, balances and payouts (each scoped to one project)."""

from datetime import datetime
from decimal import Decimal

from django.db.models import F, Q, QuerySet

from accounts.models import Project
from billing_site.aggregates import MoneySum
from catalog.models import Customer
from catalog.selectors import CUSTOMER_PAGE_ROWS
from payments.models import BalanceEntry, Payment, PaymentMethod, Payout

# --- payment methods


def payment_method_list(*, customer: Customer) -> QuerySet[PaymentMethod]:
    """The customer's attached methods: the default first, then the most recent."""
    return PaymentMethod.objects.filter(customer=customer, detached_at__isnull=True).order_by(
        "-is_default", "-created_at", "-id"
    )


def default_payment_method(customer: Customer) -> PaymentMethod | None:
    return payment_method_list(customer=customer).filter(is_default=True).first()


def payment_method_by_reference(*, customer: Customer, reference: str) -> PaymentMethod | None:
    """One of the customer's methods, attached or detached, by our ID (`pmt_…`) or Stripe's (`pm_…`)."""
    return (
        PaymentMethod.objects.filter(customer=customer)
        .filter(Q(public_id=reference) | Q(processor_id=reference))
        .first()
    )


# --- payments and the balance


def balance_for(*, project: Project, now: datetime) -> dict[str, dict[str, Decimal]]:
    """Per currency: `available` (ready for payout) and `pending` (not yet), from the ledger."""
    rows = (
        BalanceEntry.objects.filter(project=project)
        .values("currency")
        .annotate(
            available=MoneySum("amount", filter=Q(available_at__lte=now)),
            pending=MoneySum("amount", filter=Q(available_at__gt=now)),
        )
        .order_by("currency")
    )
    return {
        row["currency"]: {
            "available": row["available"] or Decimal(0),
            "pending": row["pending"] or Decimal(0),
        }
        for row in rows
    }


def payment_list(*, project: Project) -> QuerySet[Payment]:
    return Payment.objects.filter(project=project).select_related("invoice", "customer", "payment_method")


def payout_list(*, project: Project) -> QuerySet[Payout]:
    return Payout.objects.filter(project=project)


def customer_payment_list(*, customer: Customer, limit: int = CUSTOMER_PAGE_ROWS) -> list[Payment]:
    """Payments of the customer's invoices, and those the processor reported for the customer that
    match no invoice yet; latest first."""
    found = Payment.objects.filter(customer=customer).select_related("invoice", "payment_method", "project")
    return list(found.order_by("-id")[:limit])


def customer_payment_method_list(
    *, customer: Customer, limit: int = CUSTOMER_PAGE_ROWS
) -> list[PaymentMethod]:
    """Attached methods first (the default leading), then removed ones."""
    found = PaymentMethod.objects.filter(customer=customer)
    return list(found.order_by(F("detached_at").asc(nulls_first=True), "-is_default", "-id")[:limit])
