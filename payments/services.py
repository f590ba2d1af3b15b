"""Payments against invoices: recording them, applying them, refunding them, matching them.

A payment that succeeded is applied once, in the transaction that saw it succeed
(`payment_succeeded`): the ledger gets its movements, the invoice its amount paid (and `paid`
when nothing is due), and the events go out. Charging through Stripe and dunning are in
payments/collection.py; Stripe's webhooks in payments/incoming.py; payouts in payments/payouts.py.
"""

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from accounts.models import PaymentProcessor, Project
from accounts.services import Actor, audit_record
from billing_site.aggregates import MoneySum
from billing_site.errors import Conflict, InvalidInput, InvalidState, Unprocessable
from billing_site.money import round_money, to_minor_units
from invoicing.models import CreditNote, Invoice, InvoiceStatus
from invoicing.services import invoice_paid_record
from payments import ledger, stripe_processor
from payments.models import (
    IN_FLIGHT_STATUSES,
    EntryKind,
    Payment,
    PaymentStatus,
    Refund,
    RefundStatus,
)
from webhooks.services import event_record

# Statuses of an invoice a payment may still settle (Stripe lets an uncollectible invoice be paid).
PAYABLE_STATUSES = (InvoiceStatus.OPEN, InvoiceStatus.UNCOLLECTIBLE)
# How far ahead of the server's clock a recorded payment may be dated (clocks differ a little).
CLOCK_SKEW = timedelta(minutes=5)
MANUAL_METHODS = ("bank_transfer", "card", "check", "cash", "direct_debit", "other")


def available_at_for(project: Project, paid_at: datetime, processor_available_at: datetime | None = None):
    """When a payment's money is available for payout: the project's payout delay after it was
    paid (48 h by default), or the processor's own available-on date if that is later."""
    held = paid_at + timedelta(hours=project.payout_delay_hours)
    return max(held, processor_available_at) if processor_available_at else held


def _locked_invoice(invoice_id: int) -> Invoice:
    return Invoice.objects.select_for_update().select_related("project", "customer").get(pk=invoice_id)


def payment_succeeded(payment: Payment) -> None:
    """Apply a payment that has just succeeded (its status saved as such, in this transaction):
    the ledger's movements, the invoice's amount paid, the events. Called once per payment, by
    whoever moved it to `succeeded` under its row lock."""
    project = payment.project
    description = f"Payment {payment.public_id}"
    if payment.invoice_id:
        description += f" for invoice {payment.invoice.number or payment.invoice.public_id}"
    ledger.entry_add(
        project=project,
        kind=EntryKind.PAYMENT,
        reference=payment.public_id,
        currency=payment.currency,
        amount=payment.amount,
        available_at=payment.available_at,
        description=description,
        payment=payment,
    )
    if payment.fee:
        ledger.entry_add(
            project=project,
            kind=EntryKind.FEE,
            reference=payment.public_id,
            currency=payment.currency,
            amount=-payment.fee,
            available_at=payment.available_at,
            description=f"Processor fee of payment {payment.public_id}",
            payment=payment,
        )
    event_record(project=project, type="payment.succeeded", obj=payment)
    if payment.invoice_id is None:
        return
    invoice = _locked_invoice(payment.invoice_id)
    invoice.amount_paid += payment.amount
    became_paid = invoice.status in PAYABLE_STATUSES and invoice.amount_due == 0
    if became_paid:
        invoice.status = InvoiceStatus.PAID
    invoice.save(update_fields=["amount_paid", "status", "updated_at"])
    event_record(project=project, type="invoice.updated", obj=invoice)
    if became_paid:
        invoice_paid_record(invoice)


def _due(invoice: Invoice) -> Decimal:
    """What is due, to the currency's minor unit (amounts are stored with 4 places)."""
    return round_money(invoice.amount_due, invoice.currency)


def _positive_amount(amount: Decimal, currency: str, param: str = "amount") -> Decimal:
    if amount <= 0:
        raise InvalidInput("A positive amount.", code="invalid_amount", param=param)
    if round_money(amount, currency) != amount:
        raise InvalidInput(
            f"{currency} amounts have at most {-round_money(amount, currency).as_tuple().exponent} "
            "decimal places.",
            code="too_many_decimal_places",
            param=param,
        )
    return amount


def _not_future(moment: datetime | None, param: str) -> datetime:
    now = timezone.now()
    if moment is None:
        return now
    if moment > now + CLOCK_SKEW:
        raise Unprocessable("A payment cannot be dated in the future.", code="date_in_future", param=param)
    return moment


def payment_record(
    *,
    invoice: Invoice,
    amount: Decimal,
    actor: Actor,
    reference: str = "",
    paid_at: datetime | None = None,
    method: str = "bank_transfer",
) -> Payment:
    """Record a payment made outside Billable (the project's own processor, a bank transfer).

    Payments add up; the invoice is `paid` once nothing is due. More than is due is refused
    (`overpayment`), as is a second payment with the same `reference` (`duplicate_reference`, a
    unique constraint) and any payment while a Stripe charge of the invoice is under way.
    """
    if method not in MANUAL_METHODS:
        raise InvalidInput(
            f"method is one of {', '.join(MANUAL_METHODS)}.", code="invalid_choice", param="method"
        )
    paid_at = _not_future(paid_at, "paid_at")
    with transaction.atomic():
        invoice = _locked_invoice(invoice.pk)
        amount = _positive_amount(amount, invoice.currency)
        if invoice.status not in PAYABLE_STATUSES:
            raise InvalidState(
                f"Only an open or uncollectible invoice can be paid; this one is {invoice.status}.",
                current=invoice.status,
                requested=InvoiceStatus.PAID,
            )
        if invoice.payments.filter(status__in=IN_FLIGHT_STATUSES).exists():
            raise Conflict(
                "A charge of this invoice is under way; record the payment once it has failed.",
                code="payment_in_progress",
            )
        if amount > invoice.amount_due:
            raise Unprocessable(
                f"{amount} is more than the {_due(invoice)} {invoice.currency} due on this invoice.",
                code="overpayment",
                param="amount",
                extra={"amount_due": to_minor_units(invoice.amount_due, invoice.currency)},
            )
        try:
            with transaction.atomic():
                payment = Payment.objects.create(
                    project=invoice.project,
                    invoice=invoice,
                    customer=invoice.customer,
                    processor=PaymentProcessor.MANUAL,
                    processor_reference=reference,
                    method=method,
                    currency=invoice.currency,
                    amount=amount,
                    net=amount,
                    status=PaymentStatus.SUCCEEDED,
                    attempt=0,
                    paid_at=paid_at,
                    available_at=available_at_for(invoice.project, paid_at),
                )
        except IntegrityError:
            raise Conflict(
                f"A payment with reference '{reference}' is already recorded.",
                code="duplicate_reference",
                param="reference",
            ) from None
        payment.invoice = invoice
        audit_record(
            project=invoice.project,
            actor=actor,
            action="payment.recorded",
            target=payment,
            changes={"invoice": invoice.public_id, "amount": str(amount), "reference": reference},
        )
        payment_succeeded(payment)
    return payment


def payment_match(*, payment: Payment, invoice: Invoice, actor: Actor) -> Payment:
    """Reconcile a payment the processor reported without a known invoice: it now pays `invoice`
    (same customer's currency; at most what is due)."""
    with transaction.atomic():
        payment = Payment.objects.select_for_update().select_related("project").get(pk=payment.pk)
        if payment.invoice_id is not None or payment.status != PaymentStatus.SUCCEEDED:
            raise InvalidState(
                "Only an unmatched payment that succeeded can be matched to an invoice.",
                current=payment.status,
                requested="matched",
            )
        invoice = _locked_invoice(invoice.pk)
        if invoice.project_id != payment.project_id or invoice.currency != payment.currency:
            raise Unprocessable("The invoice is not in the payment's currency.", code="currency_mismatch")
        if invoice.status not in PAYABLE_STATUSES or payment.amount > invoice.amount_due:
            raise Unprocessable(
                f"The invoice ({invoice.status}, {_due(invoice)} {invoice.currency} due) "
                "cannot take this payment.",
                code="overpayment",
            )
        payment.invoice, payment.customer = invoice, invoice.customer
        payment.save(update_fields=["invoice", "customer", "updated_at"])
        audit_record(
            project=payment.project,
            actor=actor,
            action="payment.matched",
            target=payment,
            changes={"invoice": invoice.public_id},
        )
        invoice.amount_paid += payment.amount
        became_paid = invoice.amount_due == 0
        if became_paid:
            invoice.status = InvoiceStatus.PAID
        invoice.save(update_fields=["amount_paid", "status", "updated_at"])
        event_record(project=payment.project, type="payment.updated", obj=payment)
        event_record(project=payment.project, type="invoice.updated", obj=invoice)
        if became_paid:
            invoice_paid_record(invoice)
    return payment


# --- refunds -------------------------------------------------------------------------------------


def refund_owed(note: CreditNote) -> Decimal:
    """What of the credit note's refund owed has not been refunded yet."""
    refunded = note.refunds.exclude(status=RefundStatus.FAILED).aggregate(total=MoneySum("amount"))["total"]
    return note.refund_owed - (refunded or Decimal(0))


def refund_entered(refund: Refund) -> None:
    """A refund that succeeded: money out of the balance at once, and its payment's refunded amount."""
    payment = refund.payment
    ledger.entry_add(
        project=refund.project,
        kind=EntryKind.REFUND,
        reference=refund.public_id,
        currency=refund.currency,
        amount=-refund.amount,
        available_at=timezone.now(),
        description=f"Refund {refund.public_id} of payment {payment.public_id}",
        payment=payment,
        refund=refund,
    )
    Payment.objects.filter(pk=payment.pk).update(amount_refunded=F("amount_refunded") + refund.amount)
    payment.refresh_from_db(fields=["amount_refunded"])
    event_record(project=refund.project, type="payment.refunded", obj=refund)


def credit_note_refund(*, credit_note: CreditNote, actor: Actor, reference: str = "") -> list[Refund]:
    """Give back the credit note's refund owed, from the invoice's payments (latest first).

    Stripe payments are refunded through Stripe (idempotency key from the credit note and the
    payment, so a retry refunds once); payments recorded for the project's own processor are
    recorded as refunded with `reference` (the processor's refund, a bank transfer). Refused when
    nothing is owed.
    """
    with transaction.atomic():
        note = (
            CreditNote.objects.select_for_update().select_related("project", "invoice").get(pk=credit_note.pk)
        )
        owed = refund_owed(note)
        if owed <= 0:
            raise Unprocessable("Nothing is owed back on this credit note.", code="nothing_to_refund")
        payments = list(
            Payment.objects.select_for_update()
            .select_related("project")
            .filter(invoice=note.invoice, status=PaymentStatus.SUCCEEDED)
            .order_by("-paid_at", "-id")
        )
        refunds = []
        for payment in payments:
            amount = min(owed, payment.amount - payment.amount_refunded)
            if amount <= 0:
                continue
            refunds.append(_refund_payment(payment, note, amount, reference, actor))
            owed -= amount
            if owed == 0:
                break
        if not refunds:
            raise Unprocessable("No payment of this invoice is left to refund.", code="nothing_to_refund")
    return refunds


def _refund_payment(payment: Payment, note: CreditNote, amount: Decimal, reference: str, actor: Actor):
    refund = Refund(
        project=payment.project,
        payment=payment,
        credit_note=note,
        processor=payment.processor,
        currency=payment.currency,
        amount=amount,
        status=RefundStatus.SUCCEEDED,
    )
    if payment.processor == PaymentProcessor.STRIPE:
        processor_refund = _stripe_refund(payment, refund)
        refund.processor_reference = processor_refund["id"]
        if processor_refund["status"] not in ("succeeded", "pending"):
            raise Unprocessable(
                f"Stripe answered the refund with status {processor_refund['status']}.",
                code="refund_failed",
            )
        refund.status = (
            RefundStatus.SUCCEEDED if processor_refund["status"] == "succeeded" else RefundStatus.PENDING
        )
    else:
        refund.processor_reference = reference
    refund.save()
    audit_record(
        project=payment.project,
        actor=actor,
        action="payment.refunded",
        target=refund,
        changes={"payment": payment.public_id, "credit_note": note.public_id, "amount": str(amount)},
    )
    if refund.status == RefundStatus.SUCCEEDED:
        refund_entered(refund)
    return refund


def _stripe_refund(payment: Payment, refund: Refund) -> dict[str, Any]:
    # One key per (credit note, payment), as the unique constraint on refunds: a refund retried
    # after a timeout or a rollback is answered by Stripe with the first one.
    key = f"billable:refund:{refund.credit_note.public_id}:{payment.public_id}"
    params = {
        "payment_intent": payment.processor_reference,
        "amount": to_minor_units(refund.amount, refund.currency),
    }
    try:
        return stripe_processor.plain(
            stripe_processor.call(
                payment.project,
                lambda client: client.v1.refunds.create(params=params, options={"idempotency_key": key}),
            )
        )
    except stripe_processor.ProcessorError as exc:
        raise Unprocessable(exc.message, code=exc.code) from exc
