"""Collecting through Stripe (localstripe, a real fake server): the charge when an invoice is issued,
dunning on the project's schedule, and never charging twice."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
import time_machine
from django.core.management import call_command

from accounts.models import DunningFinalAction
from invoicing.models import InvoiceStatus
from invoicing.services import credit_note_create
from payments import collection
from payments.models import BalanceEntry, EntryKind, Payment, PaymentStatus
from tests.catalog.factories import CustomerFactory
from tests.conftest import api_client
from tests.invoicing.factories import issued_invoice
from tests.payments.conftest import saved_card, stripe_charges
from webhooks.models import Event

pytestmark = pytest.mark.django_db

D = Decimal
DECLINED = "4000000000000341"  # attaches, and every charge is declined
# Near the real clock: localstripe dates its balance transactions by it (available_on).
T0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


def _issue(project, customer, total="25.00"):
    return issued_invoice(project, total=total, customer=customer)


def _retry(at):
    with time_machine.travel(at, tick=False):
        out = StringIO()
        call_command("retry_payments", stdout=out)
        return out.getvalue().strip()


def _attempts(invoice):
    return list(invoice.payments.order_by("attempt").values_list("attempt", "status", "failure_code"))


def _types(project, prefix=""):
    return [t for t in Event.objects.filter(project=project).order_by("id").values_list("type", flat=True)
            if t.startswith(prefix)]  # fmt: skip


@time_machine.travel(T0, tick=False)
def test_an_issued_invoice_is_charged_to_the_default_card(stripe_project, django_capture_on_commit_callbacks):
    customer = CustomerFactory(project=stripe_project)
    card = saved_card(customer)

    with django_capture_on_commit_callbacks(execute=True):
        invoice = _issue(stripe_project, customer)

    invoice.refresh_from_db()
    payment = invoice.payments.get()
    [charge] = stripe_charges(customer)
    assert (invoice.status, invoice.amount_paid, invoice.amount_due) == (InvoiceStatus.PAID, D("25.00"), 0)
    assert (payment.status, payment.attempt, payment.amount, payment.fee, payment.net) == (
        PaymentStatus.SUCCEEDED, 1, D("25.00"), D(0), D("25.00"),
    )  # fmt: skip
    assert (payment.payment_method, payment.processor_reference, payment.charge_reference) == (
        card, charge["payment_intent"], charge["id"],
    )  # fmt: skip
    assert (charge["amount"], charge["currency"], charge["status"]) == (2500, "usd", "succeeded")
    assert (payment.paid_at, payment.available_at) == (T0, T0 + timedelta(hours=48))
    assert list(BalanceEntry.objects.values_list("kind", "amount")) == [(EntryKind.PAYMENT, D("25.00"))]
    assert _types(stripe_project, "payment.") == ["payment.succeeded"]
    assert _types(stripe_project, "invoice.")[-2:] == ["invoice.updated", "invoice.paid"]


def test_without_a_default_payment_method_nothing_is_charged(
    stripe_project, django_capture_on_commit_callbacks
):
    customer = CustomerFactory(project=stripe_project)
    saved_card(customer, default=False)

    with django_capture_on_commit_callbacks(execute=True):
        invoice = _issue(stripe_project, customer)

    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.OPEN
    assert not invoice.payments.exists()


def test_a_failed_charge_is_retried_on_schedule_until_a_new_card_pays(
    stripe_project, django_capture_on_commit_callbacks
):
    customer = CustomerFactory(project=stripe_project)
    saved_card(customer, DECLINED)
    with time_machine.travel(T0, tick=False), django_capture_on_commit_callbacks(execute=True):
        invoice = _issue(stripe_project, customer)
    first = invoice.payments.get()
    failed = Event.objects.get(type="invoice.payment_failed")

    early = _retry(T0 + timedelta(hours=23))
    second = _retry(T0 + timedelta(days=1))
    saved_card(customer)  # the customer saves a working card as the new default
    third = _retry(T0 + timedelta(days=3))
    fourth = _retry(T0 + timedelta(days=5))

    invoice.refresh_from_db()
    assert (first.failure_code, first.next_retry_at) == ("card_declined", T0 + timedelta(days=1))
    assert (failed.data["attempt_count"], failed.data["next_payment_attempt"]) == (
        1, (T0 + timedelta(days=1)).isoformat().replace("+00:00", "Z"),
    )  # fmt: skip
    assert early == "retried 0, resumed 0: succeeded 0, failed 0"
    assert second == "retried 1, resumed 0: succeeded 0, failed 1"
    assert third == "retried 1, resumed 0: succeeded 1, failed 0"
    assert fourth == "retried 0, resumed 0: succeeded 0, failed 0"
    assert _attempts(invoice) == [
        (1, PaymentStatus.FAILED, "card_declined"), (2, PaymentStatus.FAILED, "card_declined"),
        (3, PaymentStatus.SUCCEEDED, ""),
    ]  # fmt: skip
    assert (invoice.status, invoice.amount_paid) == (InvoiceStatus.PAID, D("25.00"))
    assert sorted(charge["status"] for charge in stripe_charges(customer)) == [
        "failed",
        "failed",
        "succeeded",
    ]
    assert _types(stripe_project, "payment.") == ["payment.failed", "payment.failed", "payment.succeeded"]


@pytest.mark.parametrize(
    ("final_action", "status", "last_event"),
    [
        (DunningFinalAction.LEAVE_OPEN, InvoiceStatus.OPEN, "invoice.dunning_exhausted"),
        (DunningFinalAction.MARK_UNCOLLECTIBLE, InvoiceStatus.UNCOLLECTIBLE, "invoice.marked_uncollectible"),
    ],
)
def test_when_the_last_retry_fails_the_project_setting_decides(
    stripe_project, django_capture_on_commit_callbacks, final_action, status, last_event
):
    stripe_project.payment_retry_days, stripe_project.dunning_final_action = [1, 2], final_action
    stripe_project.save()
    customer = CustomerFactory(project=stripe_project)
    saved_card(customer, DECLINED)
    with time_machine.travel(T0, tick=False), django_capture_on_commit_callbacks(execute=True):
        invoice = _issue(stripe_project, customer)

    _retry(T0 + timedelta(days=1))
    _retry(T0 + timedelta(days=2))
    after = _retry(T0 + timedelta(days=30))

    invoice.refresh_from_db()
    assert [attempt for attempt, _, _ in _attempts(invoice)] == [1, 2, 3]
    assert invoice.payments.get(attempt=3).next_retry_at is None
    assert after == "retried 0, resumed 0: succeeded 0, failed 0"
    assert invoice.status == status
    assert _types(stripe_project, "invoice.")[-1] == last_event
    failures = Event.objects.filter(type="invoice.payment_failed").order_by("id")
    assert [event.data["next_payment_attempt"] is None for event in failures] == [False, False, True]


def test_a_charge_whose_answer_was_lost_is_asked_again_and_charged_once(stripe_project, monkeypatch):
    """The worker dies after Stripe charged but before the payment was saved: the rerun asks Stripe
    again with the same idempotency key and records the first charge."""
    customer = CustomerFactory(project=stripe_project)
    saved_card(customer)
    applied = collection.outcome_apply

    def crash(payment, outcome):
        raise RuntimeError("worker killed")

    monkeypatch.setattr(collection, "outcome_apply", crash)
    with time_machine.travel(T0, tick=False):
        invoice = _issue(stripe_project, customer)  # the charge's task runs below
        with pytest.raises(RuntimeError):
            collection.payment_collect(payment_id=invoice.payments.get().pk)
    assert invoice.payments.get().status == PaymentStatus.PENDING
    monkeypatch.setattr(collection, "outcome_apply", applied)

    too_soon = _retry(T0 + timedelta(minutes=5))
    resumed = _retry(T0 + collection.LEASE)

    invoice.refresh_from_db()
    assert too_soon == "retried 0, resumed 0: succeeded 0, failed 0"
    assert resumed == "retried 0, resumed 1: succeeded 1, failed 0"
    assert [charge["status"] for charge in stripe_charges(customer)] == ["succeeded"]
    assert invoice.status == InvoiceStatus.PAID
    assert BalanceEntry.objects.filter(kind=EntryKind.PAYMENT).count() == 1


def test_a_credit_note_reduces_what_the_pending_charge_takes(stripe_project):
    customer = CustomerFactory(project=stripe_project)
    saved_card(customer)
    with time_machine.travel(T0, tick=False):
        invoice = _issue(stripe_project, customer)  # the charge's task has not run yet
        payment = invoice.payments.get()
        credit_note_create(invoice=invoice, actor=None, reason="billing_error", amount=D("5.00"))
        collection.payment_collect(payment_id=payment.pk)

    payment.refresh_from_db()
    assert (payment.status, payment.amount) == (PaymentStatus.SUCCEEDED, D("20.00"))
    assert [charge["amount"] for charge in stripe_charges(customer)] == [2000]


def test_a_manual_payment_waits_while_a_charge_is_under_way(stripe_project):
    customer = CustomerFactory(project=stripe_project)
    saved_card(customer)
    with time_machine.travel(T0, tick=False):
        invoice = _issue(stripe_project, customer)  # pending charge, task not yet run

    response = api_client(stripe_project).post(
        f"/v1/invoices/{invoice.public_id}/payments", {"amount": 2500}, format="json"
    )

    assert (response.status_code, response.json()["error"]["code"]) == (409, "payment_in_progress")
    assert list(Payment.objects.values_list("status", flat=True)) == [PaymentStatus.PENDING]


def test_the_invoice_shows_its_collection(stripe_project, django_capture_on_commit_callbacks):
    customer = CustomerFactory(project=stripe_project)
    saved_card(customer, DECLINED)
    with time_machine.travel(T0, tick=False), django_capture_on_commit_callbacks(execute=True):
        invoice = _issue(stripe_project, customer)

    body = api_client(stripe_project).get(f"/v1/invoices/{invoice.public_id}").json()

    assert (body["status"], body["amount_due"]["amount"]) == ("open", 2500)
    assert body["payment"] == {
        "attempt_count": 1, "status": "failed",
        "next_payment_attempt": (T0 + timedelta(days=1)).isoformat().replace("+00:00", "Z"),
        "failure_code": "card_declined", "failure_message": "Your card was declined.",
    }  # fmt: skip
    assert (
        api_client(stripe_project)
        .get(f"/v1/invoices/{issued_invoice(stripe_project).public_id}")
        .json()["payment"]
        is None
    )
