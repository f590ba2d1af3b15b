"""Stripe's webhooks: verified, stored by ID before they are handled, handled once; nothing the
processor reports is dropped. The events are signed with Stripe's own helper
(stripe.WebhookSignature), since localstripe sends none to a test server's address it cannot
know in advance; the objects in them are the real ones localstripe returned where it has them."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
import time_machine
from django.db import transaction
from rest_framework.test import APIClient

from invoicing.models import InvoiceStatus
from invoicing.services import credit_note_create
from payments import incoming, stripe_processor
from payments.collection import outcome_apply
from payments.models import (
    BalanceEntry,
    EntryKind,
    Payment,
    PaymentStatus,
    Payout,
    PayoutStatus,
    ProcessorEvent,
    Refund,
    RefundStatus,
)
from payments.services import credit_note_refund
from tests.catalog.factories import CustomerFactory
from tests.invoicing.factories import issued_invoice
from tests.payments.conftest import saved_card, stripe_card, stripe_webhook
from webhooks.models import Event

pytestmark = pytest.mark.django_db

D = Decimal
T0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


@pytest.fixture
def client():
    return APIClient()


def _paid_invoice(project, django_capture_on_commit_callbacks, total="40.00"):
    customer = CustomerFactory(project=project)
    saved_card(customer)
    with django_capture_on_commit_callbacks(execute=True):
        invoice = issued_invoice(project, total=total, customer=customer)
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PAID
    return invoice, invoice.payments.get()


def _intent(project, **params):
    """A PaymentIntent made directly at (local)Stripe, not by Billable."""
    customer = CustomerFactory(project=project)
    stripe_customer = stripe_processor.customer_ensure(customer)
    card = stripe_card(project)
    client = stripe_processor.client(project)
    client.v1.payment_methods.attach(card.id, params={"customer": stripe_customer})
    intent = client.v1.payment_intents.create(
        params={"customer": stripe_customer, "payment_method": card.id, "confirm": True, **params}
    )
    return stripe_processor.plain(intent)


def test_a_bad_signature_is_refused_and_nothing_is_stored(stripe_project, client):
    response = stripe_webhook(
        client, stripe_project, "payment_intent.succeeded", {"id": "pi_1"}, secret="whsec_x"
    )

    assert (response.status_code, response.json()["error"]["code"]) == (400, "invalid_signature")
    assert not ProcessorEvent.objects.exists()


def test_an_unknown_project_is_not_found(stripe_project, client, other_project):
    response = client.post("/webhooks/stripe/proj_nope/", data="{}", content_type="application/json")
    unconfigured = client.post(
        f"/webhooks/stripe/{other_project.public_id}/", data="{}", content_type="application/json"
    )

    assert (response.status_code, unconfigured.status_code) == (404, 404)


@time_machine.travel(T0, tick=False)
def test_a_payment_nobody_asked_for_is_kept_unmatched_and_a_repeat_does_nothing(stripe_project, client):
    intent = _intent(stripe_project, amount=1234, currency="usd")

    first = stripe_webhook(
        client, stripe_project, "payment_intent.succeeded", intent, event_id="evt_unmatched"
    )
    again = stripe_webhook(
        client, stripe_project, "payment_intent.succeeded", intent, event_id="evt_unmatched"
    )

    payment = Payment.objects.get()
    assert first.json() == {
        "received": True,
        "duplicate": False,
        "outcome": f"payment {payment.public_id} unmatched",
    }
    assert again.json()["duplicate"] is True
    assert (payment.invoice, payment.status, payment.amount, payment.processor_reference) == (
        None, PaymentStatus.SUCCEEDED, D("12.34"), intent["id"],
    )  # fmt: skip
    assert list(BalanceEntry.objects.values_list("kind", "amount")) == [(EntryKind.PAYMENT, D("12.34"))]
    assert ProcessorEvent.objects.get().processed_at == T0


def test_a_payment_naming_one_of_our_invoices_pays_it(stripe_project, client):
    invoice = issued_invoice(stripe_project, total="12.34")
    intent = _intent(
        stripe_project, amount=1234, currency="usd", metadata={"billable_invoice": invoice.public_id}
    )

    stripe_webhook(client, stripe_project, "payment_intent.succeeded", intent)

    invoice.refresh_from_db()
    assert (invoice.status, invoice.payments.get().attempt) == (InvoiceStatus.PAID, 1)


def test_the_webhook_of_our_own_charge_changes_nothing(
    stripe_project, client, django_capture_on_commit_callbacks
):
    _invoice, payment = _paid_invoice(stripe_project, django_capture_on_commit_callbacks)
    intent = stripe_processor.plain(stripe_processor.client(stripe_project).v1.payment_intents.retrieve(
        payment.processor_reference
    ))  # fmt: skip
    events = Event.objects.count()

    response = stripe_webhook(client, stripe_project, "payment_intent.succeeded", intent)

    assert response.json()["outcome"] == "already succeeded"
    assert (Payment.objects.count(), BalanceEntry.objects.count(), Event.objects.count()) == (1, 1, events)


def test_a_debit_processing_settles_when_stripe_says_so(stripe_project, client):
    """A SEPA debit answers `processing` at Stripe and settles days later (localstripe settles it at
    once, so the payment is put in `processing` here as Stripe's answer would leave it)."""
    customer = CustomerFactory(project=stripe_project)
    saved_card(customer)
    invoice = issued_invoice(stripe_project, total="30.00", customer=customer)  # the charge's task not run
    payment = invoice.payments.get()
    intent = _intent(
        stripe_project, amount=3000, currency="usd", metadata={"billable_payment": payment.public_id}
    )
    with transaction.atomic():
        outcome_apply(
            Payment.objects.select_for_update().get(pk=payment.pk),
            stripe_processor.ChargeOutcome(status="processing", reference=intent["id"]),
        )

    processing = stripe_webhook(
        client, stripe_project, "payment_intent.processing", {**intent, "status": "processing"}
    )
    succeeded = stripe_webhook(client, stripe_project, "payment_intent.succeeded", intent)

    invoice.refresh_from_db()
    payment.refresh_from_db()
    assert processing.json()["outcome"] == "still processing"
    assert succeeded.json()["outcome"] == f"payment {payment.public_id} succeeded"
    assert (payment.status, invoice.status, invoice.amount_paid) == (
        PaymentStatus.SUCCEEDED, InvoiceStatus.PAID, D("30.00"),
    )  # fmt: skip
    assert [e for e in Event.objects.order_by("id").values_list("type", flat=True) if e.startswith("payment.")] == [
        "payment.processing", "payment.succeeded",
    ]  # fmt: skip


def test_a_credit_note_refund_goes_through_stripe_once(
    stripe_project, client, django_capture_on_commit_callbacks
):
    invoice, payment = _paid_invoice(stripe_project, django_capture_on_commit_callbacks)
    note = credit_note_create(invoice=invoice, actor=None, reason="billing_error", amount=D("15.00"))

    [refund] = credit_note_refund(credit_note=note, actor=None)
    charge = stripe_processor.plain(
        stripe_processor.client(stripe_project).v1.charges.retrieve(payment.charge_reference)
    )
    stripe_refund = stripe_processor.plain(
        stripe_processor.client(stripe_project).v1.refunds.retrieve(refund.processor_reference)
    )
    repeated = stripe_webhook(client, stripe_project, "refund.created", stripe_refund)

    payment.refresh_from_db()
    assert (refund.amount, refund.status, note.refund_owed) == (
        D("15.00"),
        RefundStatus.SUCCEEDED,
        D("15.00"),
    )
    assert (charge["amount_refunded"], payment.amount_refunded) == (1500, D("15.00"))
    assert repeated.json()["outcome"] == "refund already succeeded"
    assert list(BalanceEntry.objects.order_by("id").values_list("kind", "amount")) == [
        (EntryKind.PAYMENT, D("40.00")), (EntryKind.REFUND, D("-15.00")),
    ]  # fmt: skip
    with pytest.raises(Exception, match="Nothing is owed back"):
        credit_note_refund(credit_note=note, actor=None)


def test_a_refund_made_in_stripes_dashboard_is_recorded(
    stripe_project, client, django_capture_on_commit_callbacks
):
    _invoice, payment = _paid_invoice(stripe_project, django_capture_on_commit_callbacks)
    made = stripe_processor.plain(stripe_processor.client(stripe_project).v1.refunds.create(
        params={"payment_intent": payment.processor_reference, "amount": 500}
    ))  # fmt: skip

    stripe_webhook(client, stripe_project, "charge.refunded", {
        "id": payment.charge_reference, "object": "charge", "refunds": {"data": [made]},
    })  # fmt: skip
    stripe_webhook(client, stripe_project, "refund.updated", made)

    refund = Refund.objects.get()
    assert (refund.amount, refund.credit_note, refund.status) == (D("5.00"), None, RefundStatus.SUCCEEDED)
    assert BalanceEntry.objects.filter(kind=EntryKind.REFUND).count() == 1


def test_a_dispute_takes_the_money_and_a_won_dispute_returns_it(
    stripe_project, client, django_capture_on_commit_callbacks
):
    """localstripe has no disputes: the dispute objects are written as Stripe documents them."""
    _invoice, payment = _paid_invoice(stripe_project, django_capture_on_commit_callbacks)
    dispute = {"id": "dp_1", "object": "dispute", "amount": 4000, "currency": "usd",
               "charge": payment.charge_reference, "payment_intent": payment.processor_reference}  # fmt: skip

    stripe_webhook(client, stripe_project, "charge.dispute.created", {**dispute, "status": "needs_response"})
    stripe_webhook(client, stripe_project, "charge.dispute.created", {**dispute, "status": "needs_response"})
    stripe_webhook(client, stripe_project, "charge.dispute.closed", {**dispute, "status": "won"})

    assert list(BalanceEntry.objects.order_by("id").values_list("kind", "amount")) == [
        (EntryKind.PAYMENT, D("40.00")), (EntryKind.DISPUTE, D("-40.00")), (EntryKind.DISPUTE_REVERSAL, D("40.00")),
    ]  # fmt: skip
    assert [e for e in Event.objects.order_by("id").values_list("type", flat=True) if "dispute" in e] == [
        "payment.disputed", "payment.dispute_won",
    ]  # fmt: skip


def test_a_payout_stripe_made_is_recorded_and_a_failed_one_returns_the_money(stripe_project, client):
    payout = stripe_processor.plain(stripe_processor.client(stripe_project).v1.payouts.create(
        params={"amount": 700, "currency": "eur"}
    ))  # fmt: skip

    stripe_webhook(client, stripe_project, "payout.created", payout)
    stripe_webhook(
        client,
        stripe_project,
        "payout.failed",
        {**payout, "status": "failed", "failure_code": "account_closed"},
    )

    ours = Payout.objects.get()
    assert (ours.amount, ours.currency, ours.status, ours.failure_code) == (
        D("7.00"), "EUR", PayoutStatus.FAILED, "account_closed",
    )  # fmt: skip
    assert list(BalanceEntry.objects.order_by("id").values_list("kind", "amount")) == [
        (EntryKind.PAYOUT, D("-7.00")), (EntryKind.PAYOUT_FAILURE, D("7.00")),
    ]  # fmt: skip


def test_an_event_whose_handling_failed_is_handled_when_stripe_repeats_it(
    stripe_project, client, monkeypatch
):
    intent = _intent(stripe_project, amount=500, currency="usd")
    handler = incoming.HANDLERS["payment_intent.succeeded"]

    def broken(project, obj):
        raise RuntimeError("database went away")

    monkeypatch.setitem(incoming.HANDLERS, "payment_intent.succeeded", broken)
    client.raise_request_exception = False
    failed = stripe_webhook(client, stripe_project, "payment_intent.succeeded", intent, event_id="evt_retry")
    monkeypatch.setitem(incoming.HANDLERS, "payment_intent.succeeded", handler)
    stored = ProcessorEvent.objects.get()
    retried = stripe_webhook(client, stripe_project, "payment_intent.succeeded", intent, event_id="evt_retry")

    assert failed.status_code == 500
    assert (stored.processed_at, stored.error) == (None, "RuntimeError: database went away")
    assert retried.json()["duplicate"] is False
    assert Payment.objects.count() == 1
    assert ProcessorEvent.objects.get().error == ""


def test_events_billable_does_not_act_on_are_kept(stripe_project, client):
    response = stripe_webhook(client, stripe_project, "customer.updated", {"id": "cus_x"})

    assert response.json()["outcome"] == "ignored"
    assert ProcessorEvent.objects.get().type == "customer.updated"


def test_payment_methods_attached_and_detached_at_stripe_follow(stripe_project, client):
    customer = CustomerFactory(project=stripe_project)
    stripe_customer = stripe_processor.customer_ensure(customer)
    api = stripe_processor.client(stripe_project)
    card = stripe_card(stripe_project, "4000056655665556")
    attached = stripe_processor.plain(
        api.v1.payment_methods.attach(card.id, params={"customer": stripe_customer})
    )
    detached = stripe_processor.plain(api.v1.payment_methods.detach(card.id))

    stripe_webhook(client, stripe_project, "payment_method.attached", attached)
    method = customer.payment_methods.get()
    listed = [m.last4 for m in customer.payment_methods.filter(detached_at__isnull=True)]
    stripe_webhook(
        client, stripe_project, "payment_method.detached", {**detached, "customer": stripe_customer}
    )

    method.refresh_from_db()
    assert (method.processor_id, method.last4, listed) == (card.id, "5556", ["5556"])
    assert method.detached_at is not None
