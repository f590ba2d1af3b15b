"""Collecting issued invoices through Stripe: the first charge, and dunning.

When an invoice is issued and its customer has a default payment method, a `pending` payment
(attempt 1) is created in the issuing transaction (`collection_queue`, a receiver of
invoicing.signals.invoice_issued) and charged after commit by a task (`payment_collect`).

Never twice:
- the charge runs under the payment's row lock and only while the payment is `pending`, so two
  workers, or a task and `retry_payments`, charge it once;
- Stripe is asked with an idempotency key derived from the invoice and the attempt, so a charge
  whose answer was lost (a timeout, a crash before commit) is asked again with the same key and
  Stripe answers with the first result instead of charging again;
- a retry is a new payment row whose (invoice, attempt) is unique, and an invoice has at most one
  payment in flight (both database constraints), so two dunning runs make one retry.

Dunning: a failed charge is retried on the project's schedule (`payment_retry_days`, days after the
first failure; default 1, 3, 5, 7), with the customer's default payment method at that time. When
the last retry fails the invoice is left open or marked uncollectible (`dunning_final_action`).
"""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from django.db import IntegrityError, transaction
from django.utils import timezone
from django_q.tasks import async_task

from accounts.models import DunningFinalAction, PaymentProcessor
from invoicing.models import Invoice, InvoiceStatus
from invoicing.services import invoice_mark_uncollectible
from payments import stripe_processor
from payments.models import Payment, PaymentMethod, PaymentStatus
from payments.selectors import default_payment_method
from payments.services import PAYABLE_STATUSES, available_at_for, payment_succeeded
from webhooks.payloads import payload_for
from webhooks.services import event_record

logger = logging.getLogger(__name__)

# A payment still `pending` this long after it was created lost its task (or its worker died
# mid-charge): `retry_payments` charges it again, with the same idempotency key.
LEASE = timedelta(minutes=10)


def _collectable(invoice: Invoice) -> bool:
    return (
        invoice.project.payment_processor == PaymentProcessor.STRIPE
        and invoice.status in PAYABLE_STATUSES
        and invoice.amount_due > 0
    )


def _charge_after_commit(payment: Payment) -> None:
    transaction.on_commit(partial(async_task, "payments.tasks.collect_payment", payment.pk), robust=True)


def _attempt_create(invoice: Invoice, method: PaymentMethod | None, *, attempt: int) -> Payment:
    """A pending charge of what the invoice has due: (invoice, attempt) is unique."""
    return Payment.objects.create(
        project=invoice.project,
        invoice=invoice,
        customer=invoice.customer,
        processor=PaymentProcessor.STRIPE,
        payment_method=method,
        method=method.type if method else "",
        currency=invoice.currency,
        amount=invoice.amount_due,
        attempt=attempt,
    )


def collection_queue(*, invoice: Invoice, **_signal) -> Payment | None:
    """In the transaction that issues `invoice`: the first charge, if the project collects through
    Stripe and the customer has a default payment method."""
    if not _collectable(invoice):
        return None
    method = default_payment_method(invoice.customer)
    if method is None:
        return None
    payment = _attempt_create(invoice, method, attempt=1)
    _charge_after_commit(payment)
    return payment


def payment_collect(*, payment_id: int) -> Payment:
    """Charge a pending payment (the task after commit, or a rerun). Does nothing to a payment
    that is no longer pending. Stripe unreachable: the payment stays pending for a rerun."""
    with transaction.atomic():
        payment = (
            Payment.objects.select_for_update(of=("self",))
            .select_related("project", "invoice", "customer", "payment_method")
            .get(pk=payment_id)
        )
        if payment.status != PaymentStatus.PENDING:
            return payment
        invoice = Invoice.objects.select_for_update().select_related("project").get(pk=payment.invoice_id)
        if not _collectable(invoice) or payment.payment_method is None:
            payment.status = PaymentStatus.CANCELED
            payment.save(update_fields=["status", "updated_at"])
            event_record(project=payment.project, type="payment.canceled", obj=payment)
            return payment
        payment.amount = invoice.amount_due  # a credit note may have reduced it since
        try:
            customer_id = stripe_processor.customer_ensure(payment.customer)
            outcome = stripe_processor.charge(
                project=payment.project,
                customer_id=customer_id,
                payment_method_id=payment.payment_method.processor_id,
                amount=payment.amount,
                currency=payment.currency,
                idempotency_key=f"billable:{invoice.public_id}:attempt:{payment.attempt}",
                metadata={"billable_invoice": invoice.public_id, "billable_payment": payment.public_id},
            )
        except stripe_processor.ProcessorError as exc:
            if exc.code == "processor_unavailable":
                logger.warning("Stripe unreachable charging %s; it stays pending", payment.public_id)
                return payment
            outcome = stripe_processor.ChargeOutcome(
                status="failed", failure_code=exc.code, failure_message=exc.message
            )
        outcome_apply(payment, outcome)
    return payment


def outcome_apply(payment: Payment, outcome: stripe_processor.ChargeOutcome) -> None:
    """Record what Stripe said about a payment in flight (locked by the caller): succeeded,
    processing (a debit that settles days later, by webhook) or failed (dunning takes over)."""
    if outcome.reference:
        payment.processor_reference = outcome.reference
    if outcome.charge_reference:
        payment.charge_reference = outcome.charge_reference
    if outcome.method:
        payment.method = outcome.method
    if outcome.status == "succeeded":
        now = timezone.now()
        payment.status, payment.paid_at = PaymentStatus.SUCCEEDED, now
        payment.fee, payment.net = outcome.fee, payment.amount - outcome.fee
        payment.available_at = available_at_for(payment.project, now, outcome.available_at)
        payment.failure_code = payment.failure_message = ""
        payment.save()
        payment_succeeded(payment)
    elif outcome.status == "processing":
        payment.status = PaymentStatus.PROCESSING
        payment.save()
        event_record(project=payment.project, type="payment.processing", obj=payment)
    else:
        payment.status = PaymentStatus.FAILED
        payment.failure_code, payment.failure_message = outcome.failure_code, outcome.failure_message
        payment.next_retry_at = _next_retry(payment)
        payment.save()
        _failure_announce(payment)


def _next_retry(payment: Payment) -> datetime | None:
    days = payment.project.payment_retry_days
    if payment.attempt > len(days):
        return None
    first = (
        Payment.objects.filter(invoice_id=payment.invoice_id, processor=PaymentProcessor.STRIPE, attempt=1)
        .values_list("created_at", flat=True)
        .first()
    )
    return (first or payment.created_at) + timedelta(days=days[payment.attempt - 1])


def _failure_announce(payment: Payment) -> None:
    """payment.failed and invoice.payment_failed (with the next attempt, or none); after the last
    retry, the project's final action."""
    project = payment.project
    event_record(project=project, type="payment.failed", obj=payment)
    invoice = (
        Invoice.objects.select_for_update().select_related("project", "customer").get(pk=payment.invoice_id)
    )
    data = payload_for(invoice)
    data.update(
        payment=payment.public_id,
        attempt_count=payment.attempt,
        failure_code=payment.failure_code,
        failure_message=payment.failure_message,
        next_payment_attempt=payment.next_retry_at,
    )
    event_record(project=project, type="invoice.payment_failed", obj=invoice, data=data)
    if payment.next_retry_at is not None or invoice.status != InvoiceStatus.OPEN:
        return
    if project.dunning_final_action == DunningFinalAction.MARK_UNCOLLECTIBLE:
        invoice_mark_uncollectible(invoice=invoice, actor=None)
    else:
        event_record(
            project=project,
            type="invoice.dunning_exhausted",
            obj=invoice,
            data={**payload_for(invoice), "attempt_count": payment.attempt},
        )


@dataclass
class RetrySummary:
    retried: int = 0
    recovered: int = 0  # pending payments whose task was lost, charged again
    succeeded: int = 0
    failed: int = 0


def payments_due(*, now: datetime) -> tuple[list[int], list[int]]:
    """(pending payments whose task was lost, failed payments whose retry is due), oldest first."""
    lost = Payment.objects.filter(status=PaymentStatus.PENDING, created_at__lte=now - LEASE)
    retries = Payment.objects.filter(
        status=PaymentStatus.FAILED, processor=PaymentProcessor.STRIPE, next_retry_at__lte=now
    )
    return (
        list(lost.order_by("id").values_list("pk", flat=True)),
        list(retries.order_by("next_retry_at", "id").values_list("pk", flat=True)),
    )


def payment_retry(*, payment_id: int, now: datetime) -> Payment | None:
    """Make the next attempt of a failed charge whose retry is due, and charge it. Returns None
    when there is nothing to do: another run made the attempt, the invoice was paid or voided."""
    with transaction.atomic():
        failed = Payment.objects.select_for_update().select_related("project").get(pk=payment_id)
        if (
            failed.status != PaymentStatus.FAILED
            or failed.next_retry_at is None
            or failed.next_retry_at > now
        ):
            return None
        failed.next_retry_at = None
        failed.save(update_fields=["next_retry_at", "updated_at"])
        invoice = (
            Invoice.objects.select_for_update()
            .select_related("project", "customer")
            .get(pk=failed.invoice_id)
        )
        if not _collectable(invoice):
            return None
        method = default_payment_method(invoice.customer)
        try:
            with transaction.atomic():
                payment = _attempt_create(invoice, method, attempt=failed.attempt + 1)
        except IntegrityError:
            return None
        if method is None:
            outcome_apply(
                payment,
                stripe_processor.ChargeOutcome(
                    status="failed",
                    failure_code="no_payment_method",
                    failure_message="The customer has no default payment method.",
                ),
            )
            return payment
    return payment_collect(payment_id=payment.pk)


def payments_retry(*, now: datetime, progress=None) -> RetrySummary:
    """`retry_payments`: charge again what is due. Safe to run twice, concurrently, after a crash."""
    summary = RetrySummary()
    lost, retries = payments_due(now=now)
    for payment_id in lost:
        payment = payment_collect(payment_id=payment_id)
        summary.recovered += 1
        _count(summary, payment)
        if progress:
            progress()
    for payment_id in retries:
        payment = payment_retry(payment_id=payment_id, now=now)
        if payment is not None:
            summary.retried += 1
            _count(summary, payment)
        if progress:
            progress()
    return summary


def _count(summary: RetrySummary, payment: Payment) -> None:
    if payment.status == PaymentStatus.SUCCEEDED:
        summary.succeeded += 1
    elif payment.status == PaymentStatus.FAILED:
        summary.failed += 1
