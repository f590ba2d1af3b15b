"""Pricing for rating tests, written the way a plan's charges are: decimal strings."""

from decimal import Decimal
from typing import Any

from django.db import transaction

from catalog.pricing import PricingModel
from invoicing.models import (
    BillingReason,
    CreditEntry,
    CreditEntryKind,
    CreditGrant,
    Invoice,
    InvoiceLine,
    InvoiceStatus,
    LineType,
    Wallet,
)
from invoicing.rating import Pricing, Tier
from invoicing.services import invoice_issue
from tests.catalog.factories import CustomerFactory, make_plan, subscribe

D = Decimal
DECIMAL_FIELDS = {
    "unit_price", "package_size", "percentage_rate", "fixed_fee_per_event", "min_fee_per_event",
    "max_fee_per_event", "free_units", "minimum_amount", "free_amount", "overage_unit_price",
}  # fmt: skip


def tiers(*rows: tuple[str | None, str, str]) -> tuple[Tier, ...]:
    """(up_to, unit_price, flat_fee) rows; up_to None is the open-ended last tier."""
    return tuple(Tier(None if up_to is None else D(up_to), D(price), D(flat)) for up_to, price, flat in rows)


def pricing(model: PricingModel, **fields: Any) -> Pricing:
    """A usage charge; the decimal fields may be given as strings."""
    return Pricing(
        pricing_model=model,
        **{
            name: D(value) if isinstance(value, str) and name in DECIMAL_FIELDS else value
            for name, value in fields.items()
        },
    )


def draft_invoice(project, *, total: str = "100.00", customer=None) -> Invoice:
    """A draft invoice of a new subscription (of a new customer unless given), with one base-fee
    line (no usage rating involved)."""
    customer = customer or CustomerFactory(project=project)
    subscription = subscribe(customer, make_plan(project, base_fee=total))
    with transaction.atomic():
        invoice = Invoice.objects.create(
            project=project, customer=subscription.customer, subscription=subscription,
            billing_reason=BillingReason.SUBSCRIPTION_START, currency=project.currency, total=D(total),
            subtotal=D(total), period_start=subscription.starts_at, period_end=subscription.starts_at,
            status=InvoiceStatus.DRAFT,
        )  # fmt: skip
        InvoiceLine.objects.create(
            invoice=invoice, type=LineType.BASE_FEE, description="Base fee", amount=D(total), quantity=D(1),
            period_start=subscription.current_period_start, period_end=subscription.current_period_end,
        )  # fmt: skip
    return invoice


def issued_invoice(project, *, total: str = "100.00", customer=None) -> Invoice:
    """An issued draft_invoice: open, or paid when it is for nothing or prepaid credits cover it."""
    invoice = draft_invoice(project, total=total, customer=customer)
    with transaction.atomic():
        return invoice_issue(invoice=invoice, actor=None)


def credits_granted(customer, currency: str, amount: str, *, at, priority: int = 50, expires_at=None):
    """A grant of prepaid credits usable from `at`, written straight to the ledger."""
    wallet, _ = Wallet.objects.get_or_create(project=customer.project, customer=customer, currency=currency)
    grant = CreditGrant.objects.create(
        project=customer.project,
        wallet=wallet,
        amount=Decimal(amount),
        priority=priority,
        expires_at=expires_at,
        available_at=at,
    )
    CreditEntry.objects.create(
        project=customer.project, grant=grant, kind=CreditEntryKind.GRANT, amount=grant.amount
    )
    return grant
