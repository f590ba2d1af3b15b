"""Stripe's webhooks: what happened at Stripe that Billable did not ask for, or learns later.

Each event is verified (`Stripe-Signature`, Stripe's own helper), then stored by its Stripe ID
before it is handled: a repeat of an event already handled does nothing. Handling runs in one
transaction that also marks the event processed, so an event whose handling failed (an error,
a crash) is handled again when Stripe repeats it. Everything Stripe reports is kept: a payment
that matches no invoice becomes an unmatched payment (the admin's reconciliation queue), and an
event of a type Billable does not act on is stored with the outcome "ignored".
"""

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

import stripe
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from accounts.models import PaymentProcessor, Project
from billing_site.errors import InvalidInput, NotFound
from billing_site.money import from_minor_units
from catalog.models import Customer
from invoicing.models import Invoice
from payments import ledger, stripe_processor
from payments.collection import outcome_apply
from payments.methods import payment_method_sync
from payments.models import (
    IN_FLIGHT_STATUSES,
    EntryKind,
    Payment,
    PaymentStatus,
    Payout,
    PayoutStatus,
    ProcessorEvent,
    Refund,
    RefundStatus,
)
from payments.payouts import payout_update
from payments.services import PAYABLE_STATUSES, available_at_for, payment_succeeded, refund_entered
from webhooks.payloads import payload_for
from webhooks.services import event_record

logger = logging.getLogger(__name__)


def stripe_event_receive(*, project_id: str, payload: bytes, signature: str) -> tuple[ProcessorEvent, bool]:
    """Verify, store and handle one Stripe event. Returns (the stored event, whether it had
    already been handled). Raises NotFound for an unknown project, InvalidInput for a bad
    signature or body; a failure while handling is recorded on the event and raised."""
    project = Project.objects.filter(public_id=project_id).first()
    if project is None or not project.stripe_webhook_secret:
        raise NotFound("No project receives Stripe webhooks here.")
    try:
        text = payload.decode()
        stripe.WebhookSignature.verify_header(text, signature, project.stripe_webhook_secret, tolerance=300)
        body = json.loads(text)
        event_id, event_type, obj = body["id"], body["type"], body["data"]["object"]
    except stripe.SignatureVerificationError:
        raise InvalidInput("The Stripe-Signature header does not verify.", code="invalid_signature") from None
    except (UnicodeDecodeError, ValueError, KeyError, TypeError):
        raise InvalidInput("Not a Stripe event.", code="invalid_event") from None
    try:
        with transaction.atomic():
            stored = ProcessorEvent.objects.create(
                project=project,
                processor=PaymentProcessor.STRIPE,
                event_id=event_id,
                type=event_type,
                payload=body,
            )
    except IntegrityError:
        stored = ProcessorEvent.objects.get(
            project=project, processor=PaymentProcessor.STRIPE, event_id=event_id
        )
    try:
        with transaction.atomic():
            locked = ProcessorEvent.objects.select_for_update().get(pk=stored.pk)
            if locked.processed_at is not None:
                return locked, True
            handler = HANDLERS.get(event_type)
            locked.outcome = handler(project, obj) if handler else "ignored"
            locked.processed_at, locked.error = timezone.now(), ""
            locked.save(update_fields=["outcome", "processed_at", "error"])
    except Exception as exc:
        logger.exception("Stripe event %s (%s) failed", event_id, event_type)
        ProcessorEvent.objects.filter(pk=stored.pk).update(error=f"{type(exc).__name__}: {exc}"[:2000])
        raise
    return locked, False


# --- payments ------------------------------------------------------------------------------------


def _payment_for(project: Project, intent: dict) -> Payment | None:
    """Our payment of a PaymentIntent, locked: by the ID we put in its metadata (which also finds a
    charge whose answer we have not recorded yet), else by its ID."""
    payments = Payment.objects.select_for_update(of=("self",)).select_related(
        "project", "invoice", "customer"
    )
    ours = (intent.get("metadata") or {}).get("billable_payment")
    if ours:
        payment = payments.filter(project=project, public_id=ours).first()
        if payment is not None:
            return payment
    return payments.filter(
        project=project, processor=PaymentProcessor.STRIPE, processor_reference=intent["id"]
    ).first()


def _intent_changed(project: Project, intent: dict) -> str:
    payment = _payment_for(project, intent)
    if payment is None:
        if intent.get("status") != "succeeded":
            return "not a payment of ours"
        return _unknown_payment(project, intent)
    if payment.status not in IN_FLIGHT_STATUSES:
        return f"already {payment.status}"
    outcome = stripe_processor.intent_outcome(project, intent)
    if outcome.status == "processing" and payment.status == PaymentStatus.PROCESSING:
        return "still processing"
    outcome_apply(payment, outcome)
    return f"payment {payment.public_id} {payment.status}"


def _unknown_payment(project: Project, intent: dict) -> str:
    """Money Stripe collected that no charge of ours made (a payment link, the dashboard): kept,
    applied to the invoice its metadata names if that can take it, else left unmatched."""
    outcome = stripe_processor.intent_outcome(project, intent)
    currency = intent["currency"].upper()
    amount = from_minor_units(intent.get("amount_received") or intent["amount"], currency)
    customer = Customer.objects.filter(
        project=project, processor_customer_id=intent.get("customer") or "-"
    ).first()
    invoice = (
        Invoice.objects.select_for_update()
        .filter(project=project, public_id=(intent.get("metadata") or {}).get("billable_invoice", ""))
        .first()
    )
    if invoice is not None and (
        invoice.status not in PAYABLE_STATUSES or invoice.currency != currency or amount > invoice.amount_due
    ):
        invoice = None
    attempt = 0
    if invoice is not None:
        attempt = (invoice.payments.aggregate(last=Max("attempt"))["last"] or 0) + 1
    now = timezone.now()
    payment = Payment.objects.create(
        project=project,
        invoice=invoice,
        customer=invoice.customer if invoice else customer,
        processor=PaymentProcessor.STRIPE,
        processor_reference=intent["id"],
        charge_reference=outcome.charge_reference,
        method=outcome.method,
        currency=currency,
        amount=amount,
        fee=outcome.fee,
        net=amount - outcome.fee,
        status=PaymentStatus.SUCCEEDED,
        attempt=attempt,
        paid_at=now,
        available_at=available_at_for(project, now, outcome.available_at),
    )
    payment_succeeded(payment)
    return f"payment {payment.public_id} " + ("applied" if invoice else "unmatched")


def _payment_by_charge(project: Project, obj: dict) -> Payment | None:
    payments = Payment.objects.select_for_update().select_related("project").filter(project=project)
    intent = obj.get("payment_intent")
    if intent:
        payment = payments.filter(processor_reference=intent).first()
        if payment is not None:
            return payment
    charge = obj.get("charge") or (obj["id"] if obj.get("object") == "charge" else None)
    return payments.filter(charge_reference=charge).first() if charge else None


# --- refunds -------------------------------------------------------------------------------------

_REFUND_STATUS = {"succeeded": RefundStatus.SUCCEEDED, "pending": RefundStatus.PENDING}


def _refund_changed(project: Project, obj: dict) -> str:
    status = _REFUND_STATUS.get(obj.get("status"), RefundStatus.FAILED)
    refund = (
        Refund.objects.select_for_update()
        .select_related("project", "payment")
        .filter(project=project, processor=PaymentProcessor.STRIPE, processor_reference=obj["id"])
        .first()
    )
    if refund is None:
        payment = _payment_by_charge(project, obj)
        if payment is None:
            return "refund of an unknown payment"
        refund = Refund.objects.create(
            project=project,
            payment=payment,
            processor=PaymentProcessor.STRIPE,
            processor_reference=obj["id"],
            currency=payment.currency,
            amount=from_minor_units(obj["amount"], payment.currency),
            status=status,
        )
        if status == RefundStatus.SUCCEEDED:
            refund_entered(refund)
        return f"refund {refund.public_id} recorded"
    if refund.status != RefundStatus.PENDING or status == RefundStatus.PENDING:
        return f"refund already {refund.status}"
    refund.status = status
    refund.failure_message = obj.get("failure_reason") or ""
    refund.save(update_fields=["status", "failure_message", "updated_at"])
    if status == RefundStatus.SUCCEEDED:
        refund_entered(refund)
    else:
        event_record(project=project, type="payment.refund_failed", obj=refund)
    return f"refund {refund.public_id} {status}"


def _charge_refunded(project: Project, charge: dict) -> str:
    refunds = (charge.get("refunds") or {}).get("data") or []
    outcomes = [_refund_changed(project, {**refund, "charge": charge["id"]}) for refund in refunds]
    return "; ".join(outcomes) or "no refunds listed"


# --- disputes ------------------------------------------------------------------------------------


def _dispute(project: Project, dispute: dict, *, closed: bool) -> str:
    payment = _payment_by_charge(project, dispute)
    if payment is None:
        return "dispute of an unknown payment"
    amount = from_minor_units(dispute["amount"], payment.currency)
    now = timezone.now()
    if not closed:
        kind, signed, event_type = EntryKind.DISPUTE, -amount, "payment.disputed"
    elif dispute.get("status") == "won":
        kind, signed, event_type = EntryKind.DISPUTE_REVERSAL, amount, "payment.dispute_won"
    else:
        kind, signed, event_type = None, Decimal(0), "payment.dispute_lost"
    if kind is not None:
        entry = ledger.entry_add(
            project=project,
            kind=kind,
            reference=dispute["id"],
            currency=payment.currency,
            amount=signed,
            available_at=now,
            description=f"Dispute {dispute['id']} of payment {payment.public_id}",
            payment=payment,
        )
        if entry is None:
            return "dispute already entered"
    event_record(
        project=project,
        type=event_type,
        obj=payment,
        data={**payload_for(payment), "dispute": {"id": dispute["id"], "status": dispute.get("status", "")}},
    )
    return f"{event_type} {payment.public_id}"


# --- payment methods and payouts ----------------------------------------------------------------


def _payment_method(attached: bool) -> Callable[[Project, dict], str]:
    def handle(project: Project, obj: dict) -> str:
        method = payment_method_sync(project=project, stripe_pm=obj, attached=attached)
        return "customer unknown" if method is None else f"payment method {method.public_id}"

    return handle


_PAYOUT_STATUS = {
    "payout.paid": PayoutStatus.PAID,
    "payout.failed": PayoutStatus.FAILED,
    "payout.canceled": PayoutStatus.CANCELED,
}


def _payout(event_type: str) -> Callable[[Project, dict], str]:
    def handle(project: Project, obj: dict) -> str:
        payout = Payout.objects.filter(
            project=project, processor=PaymentProcessor.STRIPE, processor_reference=obj["id"]
        ).first()
        if payout is None:
            payout = _payout_from_stripe(project, obj)
        status = _PAYOUT_STATUS.get(event_type)
        if status is None:
            return f"payout {payout.public_id} {payout.status}"
        payout = payout_update(
            payout=payout,
            status=status,
            failure_code=obj.get("failure_code") or "",
            failure_message=obj.get("failure_message") or "",
        )
        return f"payout {payout.public_id} {payout.status}"

    return handle


def _payout_from_stripe(project: Project, obj: dict) -> Payout:
    """A payout Stripe made on its own schedule: recorded, and taken out of the balance."""
    currency = obj["currency"].upper()
    now = timezone.now()
    payout = Payout.objects.create(
        project=project,
        processor=PaymentProcessor.STRIPE,
        processor_reference=obj["id"],
        currency=currency,
        amount=from_minor_units(obj["amount"], currency),
        status=PayoutStatus.PENDING,
        arrival_at=datetime.fromtimestamp(obj["arrival_date"], tz=UTC) if obj.get("arrival_date") else None,
    )
    ledger.entry_add(
        project=project,
        kind=EntryKind.PAYOUT,
        reference=payout.public_id,
        currency=currency,
        amount=-payout.amount,
        available_at=now,
        description=f"Payout {obj['id']} made by Stripe",
        payout=payout,
    )
    event_record(project=project, type="payout.created", obj=payout)
    return payout


HANDLERS: dict[str, Callable[[Project, dict], str]] = {
    "payment_intent.succeeded": _intent_changed,
    "payment_intent.payment_failed": _intent_changed,
    "payment_intent.processing": _intent_changed,
    "charge.refunded": _charge_refunded,
    "refund.created": _refund_changed,
    "refund.updated": _refund_changed,
    "charge.refund.updated": _refund_changed,
    "charge.dispute.created": lambda project, obj: _dispute(project, obj, closed=False),
    "charge.dispute.closed": lambda project, obj: _dispute(project, obj, closed=True),
    "payment_method.attached": _payment_method(True),
    "payment_method.detached": _payment_method(False),
    **{
        event_type: _payout(event_type)
        for event_type in ("payout.created", "payout.updated", *_PAYOUT_STATUS)
    },
}
