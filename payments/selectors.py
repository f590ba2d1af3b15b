"""Reads of payments, balances and payouts (each scoped to one project)."""

from datetime import datetime
from decimal import Decimal

from django.db.models import Q, QuerySet

from accounts.models import Project
from billing_site.aggregates import MoneySum
from payments.models import BalanceEntry, Payment, Payout


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
