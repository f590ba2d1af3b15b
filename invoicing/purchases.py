"""Buying prepaid credits: "a purchase is an invoice".

Kept apart from invoicing/credits.py (the wallets and their ledger), which issuing and voiding
invoices call into: a purchase issues an invoice, so it sits above both.
"""

from datetime import datetime
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from accounts.services import Actor, audit_record
from catalog.models import Customer
from invoicing.credits import credit_amount, credit_currency, credit_grant_fields, wallet_get_or_create
from invoicing.models import BillingReason, CreditGrant, CreditSource, Invoice, InvoiceLine, LineType
from invoicing.services import invoice_issue
from webhooks.services import event_record


def credits_purchase(
    *,
    customer: Customer,
    currency: str,
    amount: Decimal,
    price: Decimal | None = None,
    name: str = "",
    priority: int | None = None,
    expires_at: datetime | None = None,
    actor: Actor,
) -> CreditGrant:
    """Sell the customer credits: an invoice (billing reason `credit_purchase`, no subscription)
    with one line for `price` (default: the credits' face value), issued at once, and a grant that
    becomes usable when that invoice is paid (`credits_purchase_paid`). Emits `credits.purchased`;
    a purchase for nothing (price 0) is paid, and so granted, at once."""
    currency = credit_currency(currency)
    amount = credit_amount(amount, currency, "amount")
    price = amount if price is None else credit_amount(price, currency, "price", allow_zero=True)
    now = timezone.now()
    name, priority = credit_grant_fields(name, priority, expires_at, now)
    with transaction.atomic():
        invoice = Invoice.objects.create(
            project=customer.project,
            customer=customer,
            subscription=None,
            billing_reason=BillingReason.CREDIT_PURCHASE,
            currency=currency,
            period_start=now,
            period_end=now,
            subtotal=price,
            total=price,
        )
        InvoiceLine.objects.create(
            invoice=invoice,
            type=LineType.CREDIT_PURCHASE,
            description=f"Prepaid credits: {amount:,} {currency}"[:300],
            period_start=now,
            period_end=now,
            quantity=Decimal(1),
            unit_price=price,
            amount=price,
        )
        wallet = wallet_get_or_create(customer=customer, currency=currency)
        grant = CreditGrant.objects.create(
            project=customer.project,
            wallet=wallet,
            name=name,
            source=CreditSource.PURCHASED,
            amount=amount,
            priority=priority,
            expires_at=expires_at,
            invoice=invoice,
            available_at=None,  # usable once the invoice is paid
        )
        audit_record(
            project=customer.project,
            actor=actor,
            action="credits.purchased",
            target=grant,
            changes={
                "customer": customer.public_id,
                "currency": currency,
                "amount": str(amount),
                "price": str(price),
                "invoice": invoice.public_id,
            },
        )
        event_record(project=customer.project, type="credits.purchased", obj=grant)
        invoice = Invoice.objects.select_related("project", "customer").get(pk=invoice.pk)
        invoice_issue(invoice=invoice, actor=actor)
        grant.refresh_from_db()
    return grant
